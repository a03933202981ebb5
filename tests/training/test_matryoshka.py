"""Matryoshka losses (config.loss.matryoshka_dims) against a float64 numpy reference (value, and
gradient by central differences), and the sharded steps of both recipes: 8 devices == 1 device ==
an unsharded jax.grad of the summed truncated losses."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from distilface_jax.distill import objective as distill_objective
from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.training import losses, matryoshka, sharding
from distilface_jax.training.objective import LossConfig, combine, contrastive_sums
from distilface_jax.training.state import create_train_state, state_shardings
from distilface_jax.training.step import make_train_step

from helpers import assert_trees_close, central_difference, make_batch, step_config, step_params

DIMS = (32, 16, 8, 3)
WEIGHTS = (1.0, 0.5, 2.0, 0.25)


# ----------------------------------------------------------------------------- numpy references


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def _log_softmax(logits):
    top = logits.max(1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))


def numpy_infonce(z1, z2, z3, temperature, hard_weight):
    logits = _unit(z1) @ _unit(z2).T / temperature
    if z3 is not None:
        logits = np.concatenate([logits, _unit(z1) @ _unit(z3).T / temperature + hard_weight * np.eye(len(z1))], 1)
    return -np.mean(np.diag(_log_softmax(logits)[:, : len(z1)]))


def numpy_matryoshka(loss, dims, weights, *arrays):
    """Σ_m w_m · loss(a[:, :d_m] for every array a) in float64."""
    return sum(
        w * loss(*[None if a is None else a.astype(np.float64)[:, :d] for a in arrays]) for d, w in zip(dims, weights)
    )


def numpy_distill(s, t, temperature, weight):
    contrastive = -np.mean(np.diag(_log_softmax(_unit(s) @ _unit(t).T / temperature)))
    return np.mean((s - t) ** 2) + weight * contrastive


# ----------------------------------------------------------------------------- the losses


@pytest.mark.parametrize("num_devices", [1, 8])
def test_simcse_matryoshka_loss_and_gradient_match_numpy(num_devices):
    """The objective's own sharded sums (local anchors, gathered candidates, psum) against numpy."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 3, 32)).astype(np.float32)  # [B, views: anchor, positive, hard negative, H]
    config = LossConfig(temperature=0.1, hard_negative_weight=0.3, matryoshka_dims=DIMS, matryoshka_weights=WEIGHTS)
    mesh = sharding.make_mesh(jax.devices()[:num_devices])

    def per_device(z_local):
        first_index = jax.lax.axis_index(sharding.DATA_AXIS) * z_local.shape[0]
        return combine(contrastive_sums(z_local, first_index, config), None, config)

    loss_fn = jax.shard_map(per_device, mesh=mesh, in_specs=P(sharding.DATA_AXIS), out_specs=(P(), P()))
    (value, metrics), gradient = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(jnp.asarray(z))

    def reference(z):
        infonce = functools.partial(numpy_infonce, temperature=0.1, hard_weight=0.3)
        return numpy_matryoshka(infonce, DIMS, WEIGHTS, z[:, 0], z[:, 1], z[:, 2])

    np.testing.assert_allclose(float(value), reference(z), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gradient), central_difference(reference, z), rtol=1e-3, atol=1e-6)
    # Each term is reported, and the plain metrics are the first (full) dimension's.
    infonce_8 = numpy_infonce(*[z[:, v, :8].astype(np.float64) for v in range(3)], 0.1, 0.3)
    np.testing.assert_allclose(float(metrics["loss_dim8"]), infonce_8, rtol=1e-5)
    full = numpy_infonce(*[z[:, v].astype(np.float64) for v in range(3)], 0.1, 0.3)
    assert abs(float(metrics["loss"]) - full) > 1e-3  # The total is not the full-width loss alone.


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_distill_matryoshka_loss_and_gradient_match_numpy(weight):
    rng = np.random.default_rng(1)
    s = rng.normal(size=(6, 32)).astype(np.float32)
    t = rng.normal(size=(6, 32)).astype(np.float32)
    loss_fn = lambda s: distill_objective.distill_loss(
        s, jnp.asarray(t), temperature=0.1, contrastive_weight=weight, matryoshka_dims=DIMS, matryoshka_weights=WEIGHTS
    )[0]
    value, gradient = jax.value_and_grad(loss_fn)(jnp.asarray(s))
    reference = lambda s: numpy_matryoshka(
        functools.partial(numpy_distill, temperature=0.1, weight=weight), DIMS, WEIGHTS, s, t
    )
    np.testing.assert_allclose(float(value), reference(s), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gradient), central_difference(reference, s), rtol=1e-3, atol=1e-6)


def test_without_dimensions_the_loss_is_the_plain_loss_bit_for_bit():
    rng = np.random.default_rng(2)
    s, t = (jnp.asarray(rng.normal(size=(6, 32)).astype(np.float32)) for _ in range(2))
    plain = distill_objective.finalize(distill_objective.distill_sums(s, t, t, contrastive_weight=0.5), 0.5)[0]
    assert float(distill_objective.distill_loss(s, t, contrastive_weight=0.5)[0]) == float(plain)


@pytest.mark.parametrize(
    "dims, weights, message",
    [
        ((384, 64), (), "384 is not in 1..32"),
        ((16, 16), (), "listed twice"),
        ((0,), (), "0 is not in"),
        ((16, 8), (1.0,), "one weight per dimension"),
        ((), (1.0,), "matryoshka_dims is empty"),
    ],
)
def test_bad_dimensions_are_named(dims, weights, message):
    with pytest.raises(ValueError, match="config.loss.matryoshka") as error:
        matryoshka.resolve(dims, weights, 32)
    assert message in str(error.value) and "\n" not in str(error.value)


# ----------------------------------------------------------------------------- the sharded steps

LEARNING_RATE = 0.1


def _simcse_step(batch, num_devices, loss_config):
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    optimizer = optax.sgd(LEARNING_RATE)
    model = SentenceEncoder(step_config(), pooler="cls")
    params = {k: v for k, v in step_params().items() if k != "mlm_head"}
    state = create_train_state(params, optimizer, 0, sharding.replicated(mesh))
    step = make_train_step(
        model,
        optimizer,
        lambda _: LEARNING_RATE,
        mesh,
        2,
        loss_config,
        state_shardings(state, sharding.replicated(mesh)),
    )
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    return jax.device_get(state.params), jax.device_get(metrics)


def test_simcse_matryoshka_step_on_eight_devices_equals_the_unsharded_one_device_reference():
    batch = make_batch(batch_size=16, num_views=1)
    loss_config = LossConfig(matryoshka_dims=DIMS, matryoshka_weights=WEIGHTS)
    model = SentenceEncoder(step_config(), pooler="cls")
    params = {k: v for k, v in step_params().items() if k != "mlm_head"}

    def reference_loss(params):  # Dropout is off, so both views are the same embedding.
        z = model.apply({"params": params}, batch["input_ids"][:, 0], batch["attention_mask"][:, 0])
        return sum(w * losses.simcse_loss(z[:, :d], z[:, :d])[0] for d, w in zip(DIMS, WEIGHTS))

    loss, grads = jax.jit(jax.value_and_grad(reference_loss))(params)
    reference_params = jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads)
    # The reference is the global batch on one device: 8 devices must give its loss and update.
    eight_params, eight = _simcse_step(batch, 8, loss_config)
    np.testing.assert_allclose(eight["loss"], float(loss), rtol=1e-5)
    assert_trees_close(eight_params, reference_params)
