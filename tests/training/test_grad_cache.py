"""GradCache equals the unchunked step; its activation memory follows the chunk, not the batch."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.training import sharding
from distilface_jax.training.grad_cache import make_grad_cache_fn
from distilface_jax.training.objective import LossConfig
from distilface_jax.training.state import create_train_state, state_shardings
from distilface_jax.training.step import make_train_step

from helpers import assert_trees_close, make_batch, step_config, step_params

CONFIG = step_config()
PARAMS = step_params()


def run(batch, num_devices, *, chunk_size, config=CONFIG, num_views=2, steps=2, loss_config=LossConfig()):
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    optimizer = optax.sgd(0.1)
    model = SentenceEncoder(config)
    gradient_fn = make_grad_cache_fn(model, mesh, num_views, loss_config, chunk_size) if chunk_size else None
    params = {k: v for k, v in PARAMS.items() if k != "mlm_head"}
    state = create_train_state(params, optimizer, 0, sharding.replicated(mesh))
    step = make_train_step(
        model,
        optimizer,
        lambda s: 0.1,
        mesh,
        num_views,
        loss_config,
        state_shardings(state, sharding.replicated(mesh)),
        gradient_fn,
    )
    losses = []
    for _ in range(steps):
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params), step, state


@pytest.mark.parametrize(
    "num_devices, chunk_size, dropout",
    [
        (2, 3, 0.0),  # 12 rows per device: 4 even chunks
        (2, 5, 0.1),  # 12 rows per device: 2 chunks of 5 + a remainder of 2, dropout on
        (1, 7, 0.1),  # 24 rows: 3 chunks of 7 + 3
        (4, 8, 0.0),  # chunk larger than the 6 local rows: the remainder path only
    ],
)
def test_grad_cache_equals_unchunked_step(num_devices, chunk_size, dropout):
    config = CONFIG.replace(hidden_dropout=dropout, attention_dropout=dropout)
    batch = make_batch(batch_size=24)
    expected_losses, expected_params, _, _ = run(batch, num_devices, chunk_size=0, config=config)
    losses, params, _, _ = run(batch, num_devices, chunk_size=chunk_size, config=config)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    assert_trees_close(params, expected_params, rtol=1e-5, atol=1e-6)


def test_grad_cache_with_hard_negatives():
    batch = make_batch(batch_size=16, num_views=3)
    loss_config = LossConfig(hard_negative_weight=1.0)
    expected_losses, expected_params, _, _ = run(batch, 2, chunk_size=0, num_views=3, loss_config=loss_config)
    losses, params, _, _ = run(batch, 2, chunk_size=3, num_views=3, loss_config=loss_config)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    assert_trees_close(params, expected_params, rtol=1e-5, atol=1e-6)


def test_grad_cache_rejects_mlm_and_bad_chunks():
    mesh = sharding.make_mesh(jax.devices()[:1])
    with pytest.raises(ValueError, match="do_mlm"):
        make_grad_cache_fn(SentenceEncoder(CONFIG), mesh, 2, LossConfig(do_mlm=True), 4)
    with pytest.raises(ValueError, match=">= 1"):
        make_grad_cache_fn(SentenceEncoder(CONFIG), mesh, 2, LossConfig(), -1)


def temp_bytes(batch_size: int, chunk_size: int) -> int:
    """Compiled temporary (activation) memory of one step on one device."""
    batch = make_batch(batch_size=batch_size, length=32)
    _, _, step, state = run(make_batch(batch_size=8), 1, chunk_size=chunk_size, steps=0)
    mesh = sharding.make_mesh(jax.devices()[:1])
    compiled = step.lower(state, sharding.global_batch(batch, mesh)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_activation_memory_is_flat_in_the_global_batch_with_grad_cache():
    sizes = (32, 128, 512)
    plain = [temp_bytes(size, 0) for size in sizes]
    chunked = [temp_bytes(size, 16) for size in sizes]
    print("temp bytes, plain:", plain, "grad cache (chunk 16):", chunked)
    assert plain[2] > 8 * plain[0]  # Without GradCache activations grow with the batch (16×) ...
    assert chunked[2] < 2 * chunked[0]  # ... with it they barely move (embeddings and logits only).
    assert chunked[2] < plain[2] / 5


def test_train_loop_wires_grad_cache_and_bfloat16(tmp_path):
    """The `train` loop with `grad_cache_chunk_size` gives the plain loop's losses; bf16 compute runs."""
    from distilface_jax.training import trainer
    from distilface_jax.training.metrics import read_metrics

    from helpers import ROOT, load_config

    def losses(**overrides):
        config = load_config(ROOT / "configs" / "tiny.py")
        config.max_steps, config.log_every, config.eval_every, config.eval.final_test = 6, 1, 0, False
        for key, value in overrides.items():
            section, _, name = key.rpartition(".")
            setattr(config[section] if section else config, name, value)
        workdir = tmp_path / "_".join(f"{k}-{v}" for k, v in overrides.items()) if overrides else tmp_path / "plain"
        trainer.train_and_evaluate(config, str(workdir))
        return [r["loss"] for r in read_metrics(str(workdir)) if "loss" in r]

    plain = losses()
    np.testing.assert_allclose(losses(grad_cache_chunk_size=3), plain, rtol=1e-5)
    half = losses(**{"model.dtype": "bfloat16"})
    assert np.all(np.isfinite(half)) and half != plain
    np.testing.assert_allclose(half, plain, rtol=0.05)
