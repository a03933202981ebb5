"""The distillation objective and its sharded step against independent references: a float64
numpy loss (value, and gradient by central differences), an unsharded jax.grad step, and
1 device vs 8 devices."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distilface_jax.distill import objective
from distilface_jax.distill.step import DistillSettings, make_distill_step
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import SentenceEncoder, init_params
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.training import losses, sharding, state as train_state

from helpers import central_difference


def numpy_loss(s, t, temperature, weight):
    s, t = s.astype(np.float64), t.astype(np.float64)
    mse = np.mean((s - t) ** 2)  # torch.nn.MSELoss(reduction="mean")
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    logits = unit(s) @ unit(t).T / temperature
    log_softmax = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    contrastive = -np.mean(np.diag(log_softmax))
    return mse + weight * contrastive


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_loss_and_gradient_match_numpy(weight):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(6, 5)).astype(np.float32)
    t = rng.normal(size=(6, 5)).astype(np.float32)
    loss_fn = lambda s: objective.distill_loss(s, jnp.asarray(t), temperature=0.1, contrastive_weight=weight)[0]
    value, gradient = jax.value_and_grad(loss_fn)(jnp.asarray(s))
    np.testing.assert_allclose(float(value), numpy_loss(s, t, 0.1, weight), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(gradient), central_difference(lambda x: numpy_loss(x, t, 0.1, weight), s), rtol=1e-3, atol=1e-6
    )
    # The teacher is a constant: no gradient flows into it.
    teacher_gradient = jax.grad(lambda t: objective.distill_loss(jnp.asarray(s), t, contrastive_weight=weight)[0])(
        jnp.asarray(t)
    )
    np.testing.assert_array_equal(np.asarray(teacher_gradient), 0.0)


# ----------------------------------------------------------------------------- the sharded step

STUDENT = EncoderConfig(
    model_type="bert",
    vocab_size=100,
    hidden_size=32,
    num_layers=1,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)
TEACHER = STUDENT.replace(hidden_size=24, num_layers=2, num_heads=4)
LEARNING_RATE = 0.5


def settings(config=STUDENT):
    """The student mean-pooled, through its width map 32 → 24, normalised; the teacher mean-pooled, normalised."""
    return DistillSettings(
        student=SentencePipeline(config, pooler="avg", width_map=24, normalize=True),
        teacher=SentencePipeline(TEACHER, pooler="avg", normalize=True),
        temperature=0.1,
        contrastive_weight=0.5,
    )


def _params():
    student = dict(jax.device_get(init_params(STUDENT, jax.random.key(0))))
    rng = np.random.default_rng(1)  # A width map 32 → 24, as for a student narrower than its teacher.
    student["projection"] = {
        "kernel": rng.normal(0, 0.2, (32, 24)).astype(np.float32),
        "bias": rng.normal(0, 0.1, (24,)).astype(np.float32),
    }
    return student, jax.device_get(init_params(TEACHER, jax.random.key(2)))


def _tokens(rng, batch_size, length):
    ids = rng.integers(5, 100, (batch_size, 1, length)).astype(np.int32)
    ids[:, :, 0] = 2
    mask = np.ones_like(ids)
    for row in range(batch_size):
        mask[row, :, rng.integers(3, length + 1) :] = 0
    return np.where(mask == 1, ids, 0).astype(np.int32), mask


def _teacher_model():
    return SentenceEncoder(TEACHER, pooler="avg")


def make_batch(batch_size=16):
    """Student tokens and the teacher's own (other) tokens of the same examples, plus the
    teacher's embeddings of them (what the cache would hold), computed without our step."""
    rng = np.random.default_rng(3)
    ids, mask = _tokens(rng, batch_size, 12)
    teacher_ids, teacher_mask = _tokens(rng, batch_size, 10)
    _, teacher_params = _params()
    teacher_embedding = losses.l2_normalize(
        _teacher_model().apply({"params": teacher_params}, teacher_ids[:, 0], teacher_mask[:, 0])
    )
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(ids),
        "teacher_input_ids": teacher_ids,
        "teacher_attention_mask": teacher_mask,
        "teacher_token_type_ids": np.zeros_like(teacher_ids),
        "teacher_embedding": np.asarray(teacher_embedding),
    }


def reference_sgd_step(batch):
    """Plain jax.grad of the whole batch on one device: no shard_map, no gather, no train_step."""
    student_params, _ = _params()
    model = SentenceEncoder(STUDENT, pooler="avg")

    def loss_fn(params):
        encoder = {k: v for k, v in params.items() if k != "projection"}
        s = model.apply(
            {"params": encoder}, batch["input_ids"][:, 0], batch["attention_mask"][:, 0], batch["token_type_ids"][:, 0]
        )
        s = losses.l2_normalize(s @ params["projection"]["kernel"] + params["projection"]["bias"])
        return objective.distill_loss(s, batch["teacher_embedding"], temperature=0.1, contrastive_weight=0.5)[0]

    loss, grads = jax.value_and_grad(loss_fn)(student_params)
    return float(loss), jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, student_params, grads)


def run_steps(batch, num_devices, *, teacher_in_step=False, steps=1, optimizer=None, config=STUDENT):
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    optimizer = optimizer or optax.sgd(LEARNING_RATE)
    student_params, teacher_params = _params()
    state = train_state.create_train_state(student_params, optimizer, 0, sharding.replicated(mesh))
    step = make_distill_step(
        SentenceEncoder(config, pooler="avg"),
        optimizer,
        lambda _: LEARNING_RATE,
        mesh,
        settings(config),
        train_state.state_shardings(state, sharding.replicated(mesh)),
        _teacher_model() if teacher_in_step else None,
        teacher_params if teacher_in_step else None,
    )
    if teacher_in_step:
        batch = {k: v for k, v in batch.items() if k != "teacher_embedding"}
    else:
        batch = {k: v for k, v in batch.items() if not k.startswith("teacher_") or k == "teacher_embedding"}
    history = []
    for _ in range(steps):
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        history.append(jax.device_get(metrics))
    return jax.device_get(state.params), history


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), actual, expected)


@pytest.mark.parametrize("num_devices", [8])
def test_sharded_step_equals_unsharded_reference(num_devices):
    batch = make_batch()
    reference_loss, reference_params = reference_sgd_step(batch)
    params, history = run_steps(batch, num_devices)
    np.testing.assert_allclose(history[0]["loss"], reference_loss, rtol=1e-5)
    assert_trees_close(params, reference_params)


def test_teacher_in_the_step_equals_cached_teacher_embeddings():
    batch = make_batch()
    cached_params, cached = run_steps(batch, 8, steps=2)
    in_step_params, in_step = run_steps(batch, 8, teacher_in_step=True, steps=2)
    np.testing.assert_allclose([m["loss"] for m in in_step], [m["loss"] for m in cached], rtol=1e-5)
    assert_trees_close(in_step_params, cached_params)


def test_dropout_on_eight_devices_equals_one_device():
    """Per-example dropout keys: even with dropout on, the device count does not change the step."""
    batch = make_batch()
    config = STUDENT.replace(hidden_dropout=0.1, attention_dropout=0.1)
    one_params, one = run_steps(batch, 1, config=config, steps=2)
    eight_params, eight = run_steps(batch, 8, config=config, steps=2)
    np.testing.assert_allclose([m["loss"] for m in eight], [m["loss"] for m in one], rtol=1e-5)
    assert_trees_close(eight_params, one_params)
    _, no_dropout = run_steps(batch, 8, steps=1)
    assert abs(no_dropout[0]["loss"] - one[0]["loss"]) > 1e-6  # Dropout really was on.


def test_distill_matryoshka_step_on_eight_devices_equals_the_unsharded_one_device_reference():
    """config.loss.matryoshka_dims in distillation: the step sums MSE + InfoNCE of the truncated
    (projected, normalised) student and teacher embeddings over the global batch."""
    batch = {k: v for k, v in make_batch().items() if not k.startswith("teacher_") or k == "teacher_embedding"}
    dims, weights = (24, 12, 5), (1.0, 1.0, 3.0)  # The projected width is 24.
    matryoshka_settings = dataclasses.replace(settings(), matryoshka_dims=dims, matryoshka_weights=weights)
    model = SentenceEncoder(STUDENT, pooler="avg")

    def reference_loss(params):
        encoder = {k: v for k, v in params.items() if k != "projection"}
        s = model.apply(
            {"params": encoder}, batch["input_ids"][:, 0], batch["attention_mask"][:, 0], batch["token_type_ids"][:, 0]
        )
        s = losses.l2_normalize(s @ params["projection"]["kernel"] + params["projection"]["bias"])
        t = batch["teacher_embedding"]
        return sum(
            w * objective.distill_loss(s[:, :d], t[:, :d], temperature=0.1, contrastive_weight=0.5)[0]
            for d, w in zip(dims, weights)
        )

    student_params, _ = _params()
    loss, grads = jax.jit(jax.value_and_grad(reference_loss))(student_params)
    reference_params = jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, student_params, grads)

    def run(num_devices):
        mesh = sharding.make_mesh(jax.devices()[:num_devices])
        optimizer = optax.sgd(LEARNING_RATE)
        state = train_state.create_train_state(_params()[0], optimizer, 0, sharding.replicated(mesh))
        step = make_distill_step(
            model,
            optimizer,
            lambda _: LEARNING_RATE,
            mesh,
            matryoshka_settings,
            train_state.state_shardings(state, sharding.replicated(mesh)),
        )
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        return jax.device_get(state.params), jax.device_get(metrics)

    # The reference is the global batch on one device: 8 devices must give its loss and update.
    eight_params, eight = run(8)
    np.testing.assert_allclose(eight["loss"], float(loss), rtol=1e-5)
    assert_trees_close(eight_params, reference_params)
