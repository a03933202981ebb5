"""The sharded SimCSE step against independent references: an unsharded loss, other device counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.training import losses, sharding
from distilface_jax.training.objective import LossConfig, device_embeddings
from distilface_jax.training.state import create_train_state, state_shardings
from distilface_jax.training.step import make_train_step

from helpers import assert_trees_close, make_batch, step_config, step_params

CONFIG = step_config()
PARAMS = step_params()
LEARNING_RATE = 0.1


def run_steps(
    batch,
    num_devices,
    *,
    config=CONFIG,
    optimizer=None,
    num_views=2,
    loss_config=LossConfig(),
    steps=2,
    pooler="cls",
    seed=0,
):
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    optimizer = optimizer or optax.sgd(LEARNING_RATE)
    schedule = lambda step: LEARNING_RATE
    model = SentenceEncoder(config, pooler=pooler, with_mlm_head=loss_config.do_mlm)
    params = PARAMS if loss_config.do_mlm else {k: v for k, v in PARAMS.items() if k != "mlm_head"}
    state = create_train_state(params, optimizer, seed, sharding.replicated(mesh))
    step = make_train_step(
        model, optimizer, schedule, mesh, num_views, loss_config, state_shardings(state, sharding.replicated(mesh))
    )
    history = []
    for _ in range(steps):
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        history.append(jax.device_get(metrics))
    return jax.device_get(state.params), history


def reference_sgd_step(batch, *, hard_negatives=False, hard_negative_weight=0.0):
    """One SGD step on the global batch with no shard_map, no gather: plain jax.grad of
    `simcse_loss` over the embeddings of the whole batch on one device."""
    model = SentenceEncoder(CONFIG, pooler="cls")
    params = {k: v for k, v in PARAMS.items() if k != "mlm_head"}

    def loss_fn(params):
        embed = lambda view: model.apply(
            {"params": params}, batch["input_ids"][:, view], batch["attention_mask"][:, view]
        )
        views = batch["input_ids"].shape[1]
        z1, z2 = embed(0), embed(1 if views > 1 else 0)
        z3 = embed(2) if hard_negatives else None
        return losses.simcse_loss(z1, z2, z3, hard_negative_weight=hard_negative_weight)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    return float(loss), jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads)


@pytest.mark.parametrize("num_devices", [1, 4, 8])
def test_unsupervised_step_equals_unsharded_reference(num_devices):
    batch = make_batch()
    reference_loss, reference_params = reference_sgd_step(batch)
    params, history = run_steps(batch, num_devices, steps=1)
    np.testing.assert_allclose(history[0]["loss"], reference_loss, rtol=1e-5)
    assert_trees_close(params, reference_params)


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_supervised_hard_negative_step_equals_unsharded_reference(weight):
    batch = make_batch(num_views=3)
    reference_loss, reference_params = reference_sgd_step(batch, hard_negatives=True, hard_negative_weight=weight)
    params, history = run_steps(batch, 8, num_views=3, steps=1, loss_config=LossConfig(hard_negative_weight=weight))
    np.testing.assert_allclose(history[0]["loss"], reference_loss, rtol=1e-5)
    assert_trees_close(params, reference_params)


def test_adamw_steps_agree_across_device_counts():
    """Losses of an AdamW run: 8 devices = 1 device (params are compared under SGD above;
    under Adam, parameters with an exactly zero true gradient, e.g. attention key biases,
    amplify float noise to ±lr, so only the losses are comparable)."""
    batch = make_batch()
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, eps=1e-8, weight_decay=0.0))
    _, one = run_steps(batch, 1, optimizer=optimizer, steps=3)
    _, eight = run_steps(batch, 8, optimizer=optimizer, steps=3)
    np.testing.assert_allclose([m["loss"] for m in eight], [m["loss"] for m in one], rtol=1e-5)


def test_dropout_masks_do_not_depend_on_the_device_count():
    """Dropout keys are per example, so even with dropout on, 8 devices = 1 device."""
    config = CONFIG.replace(hidden_dropout=0.1, attention_dropout=0.1)
    batch = make_batch()
    one_params, one = run_steps(batch, 1, config=config)
    eight_params, eight = run_steps(batch, 8, config=config)
    np.testing.assert_allclose([m["loss"] for m in eight], [m["loss"] for m in one], rtol=1e-5)
    assert_trees_close(eight_params, one_params)
    _, no_dropout = run_steps(batch, 8)
    assert abs(no_dropout[0]["loss"] - one[0]["loss"]) > 1e-4  # Dropout really was on.


def test_two_views_differ_only_with_dropout():
    batch = {k: jnp.asarray(v) for k, v in make_batch(batch_size=4).items()}
    key = jax.random.key(3)
    params = {k: v for k, v in PARAMS.items() if k != "mlm_head"}
    for dropout, should_differ in ((0.1, True), (0.0, False)):
        model = SentenceEncoder(CONFIG.replace(hidden_dropout=dropout, attention_dropout=dropout))
        z = device_embeddings(model, params, batch, key, 0, 2, deterministic=dropout == 0.0)  # [b, 2, H]
        assert z.shape == (4, 2, 32)
        differs = not np.allclose(z[:, 0], z[:, 1])
        assert differs == should_differ
    # Same key → same masks (a resumed step redraws them exactly); another key → others.
    model = SentenceEncoder(CONFIG.replace(hidden_dropout=0.1, attention_dropout=0.1))
    first = device_embeddings(model, params, batch, key, 0, 2, deterministic=False)
    np.testing.assert_array_equal(first, device_embeddings(model, params, batch, key, 0, 2, deterministic=False))
    assert not np.allclose(first, device_embeddings(model, params, batch, jax.random.key(4), 0, 2, deterministic=False))


def test_batch_not_divisible_by_devices_is_a_clear_error():
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        sharding.check_batch_size(12, sharding.make_mesh())


def test_same_seed_gives_the_same_losses_and_another_seed_does_not():
    """The step's randomness is a pure function of (seed, step, example): reruns repeat exactly."""
    config = CONFIG.replace(hidden_dropout=0.1, attention_dropout=0.1)
    batch = make_batch()
    first_params, first = run_steps(batch, 8, config=config)
    again_params, again = run_steps(batch, 8, config=config)
    assert [m["loss"] for m in first] == [m["loss"] for m in again]
    jax.tree_util.tree_map(np.testing.assert_array_equal, first_params, again_params)
    _, other_seed = run_steps(batch, 8, config=config, seed=1)  # other dropout masks
    assert all(abs(a["loss"] - b["loss"]) > 1e-4 for a, b in zip(first, other_seed))
