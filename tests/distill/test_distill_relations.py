"""The distillation terms beyond MSE (relational KL over the global batch, hidden-state and
MiniLM attention-relation distillation, the teacher-embedding queue) against independent
references: float64 numpy (values, gradients by central differences), Hugging Face's PyTorch
BERT (hidden states, attention probabilities, value states) with DistilBERT's cosine loss and
MiniLM's KL written in torch; the sharded step on 8 devices against 1; the queue's rows against
the batches they came from."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distilface_jax.distill import objective, relations
from distilface_jax.distill.queue import QueuedTeacherData
from distilface_jax.distill.step import (
    TEACHER_EMBEDDING,
    TEACHER_QUEUE,
    TEACHER_QUEUE_VALID,
    DistillSettings,
    make_distill_step,
)
from distilface_jax.models.sentence_model import SentenceEncoder, init_params
from distilface_jax.models.sentence_pipeline import SentencePipeline, embed
from distilface_jax.training import data, sharding, state as train_state

from helpers import SENTENCES, assert_trees_close, central_difference, step_config


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _log_softmax(x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def numpy_relational(s, t, temperature):
    """1/B Σ_i KL(p_t(·|i) ‖ p_s(·|i)), p over j ≠ i of softmax(cos/τ), float64."""
    s, t = s.astype(np.float64), t.astype(np.float64)
    total = 0.0
    for i in range(len(s)):
        others = [j for j in range(len(s)) if j != i]
        log_p_s = _log_softmax(_unit(s[others]) @ _unit(s[i]) / temperature)
        log_p_t = _log_softmax(_unit(t[others]) @ _unit(t[i]) / temperature)
        total += np.sum(np.exp(log_p_t) * (log_p_t - log_p_s))
    return total / len(s)


def numpy_queued_infonce(s, t, queue, valid, temperature):
    """−1/B Σ_i log softmax over [t; valid queue rows] of cos(s_i, ·)/τ at column i."""
    candidates = np.concatenate([t, queue[valid]]).astype(np.float64)
    logits = _unit(s.astype(np.float64)) @ _unit(candidates).T / temperature
    return -np.mean(np.diag(_log_softmax(logits)[:, : len(t)]))


def test_relational_kl_value_and_gradient_match_numpy():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)

    def ours(s):
        sums = relations.relational_sums(s, s, jnp.asarray(t), jnp.asarray(t), anchor_offset=0, temperature=0.2)
        return sums["relational_kl"] / s.shape[0]

    value, gradient = jax.value_and_grad(ours)(jnp.asarray(s))
    np.testing.assert_allclose(float(value), numpy_relational(s, t, 0.2), rtol=1e-5)
    expected = central_difference(lambda x: numpy_relational(x, t, 0.2), s)
    np.testing.assert_allclose(np.asarray(gradient), expected, rtol=1e-3, atol=1e-6)
    # Local anchors against the global batch (a device holding rows 2..3) give those rows' share.
    local = relations.relational_sums(s[2:4], s, t[2:4], t, anchor_offset=2, temperature=0.2)["relational_kl"]
    one_row = lambda i: relations.relational_sums(s[i : i + 1], s, t[i : i + 1], t, anchor_offset=i, temperature=0.2)
    np.testing.assert_allclose(float(local), sum(float(one_row(i)["relational_kl"]) for i in (2, 3)), rtol=1e-6)
    assert float(ours(jnp.asarray(t))) == pytest.approx(0.0, abs=1e-6)  # s = t: nothing to learn


def test_queued_infonce_matches_numpy_and_ignores_unfilled_slots():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    queue = rng.normal(size=(8, 5)).astype(np.float32)
    valid = np.array([True] * 4 + [False] * 4)

    def ours(s):
        sums = objective.distill_sums(
            s, jnp.asarray(t), jnp.asarray(t), temperature=0.1, contrastive_weight=1.0, queue=queue, queue_valid=valid
        )
        return sums["contrastive_loss"] / s.shape[0]

    value, gradient = jax.value_and_grad(ours)(jnp.asarray(s))
    np.testing.assert_allclose(float(value), numpy_queued_infonce(s, t, queue, valid, 0.1), rtol=1e-5)
    expected = central_difference(lambda x: numpy_queued_infonce(x, t, queue, valid, 0.1), s)
    np.testing.assert_allclose(np.asarray(gradient), expected, rtol=1e-3, atol=1e-6)
    # With no slot filled the term is plain InfoNCE against the batch.
    empty = objective.distill_sums(
        s, t, t, temperature=0.1, contrastive_weight=1.0, queue=queue, queue_valid=np.zeros(8, bool)
    )
    plain = objective.distill_sums(s, t, t, temperature=0.1, contrastive_weight=1.0)
    np.testing.assert_allclose(float(empty["contrastive_loss"]), float(plain["contrastive_loss"]), rtol=1e-6)


# ----------------------------------------------------------------------------- against PyTorch


@pytest.mark.parametrize("form", ["cosine", "mse"])
def test_hidden_and_attention_terms_of_a_cut_student_equal_pytorch(scaled_bert_dir, form):
    """Student = teacher layer 1 alone. Reference: HF BertModel (eager attention) for both, the
    student with the other layer removed; DistilBERT's masked-select CosineEmbeddingLoss (or
    MSELoss) on the hidden states, MiniLM's KL of attention and value relations in torch."""
    import torch
    import transformers

    from distilface_jax.distill.student import cut_layers
    from distilface_jax.interop import hf

    teacher = hf.load_pretrained(str(scaled_bert_dir))
    student_config, student_params = cut_layers(teacher.config, teacher.params, [1])
    student_config = student_config.replace(hidden_dropout=0.0, attention_dropout=0.0)  # as a run would
    encoded = teacher.tokenizer(SENTENCES, padding=True, return_tensors="np")
    # Through the step a run compiles (1 step, learning rate 0: the metrics are of the given params).
    settings = DistillSettings(
        student=SentencePipeline(student_config, teacher.tokenizer, pooler="avg"),
        teacher=SentencePipeline(teacher.config, teacher.tokenizer, pooler="avg"),
        hidden_weight=1.0,
        hidden_loss=form,
        hidden_layers=(1,),
        attention_weight=1.0,
    )
    mesh = sharding.make_mesh(jax.devices()[:2])
    optimizer = optax.sgd(0.0)
    state = train_state.create_train_state(student_params, optimizer, 0, sharding.replicated(mesh))
    step = make_distill_step(
        settings.student.module(),
        optimizer,
        lambda _: 0.0,
        mesh,
        settings,
        train_state.state_shardings(state, sharding.replicated(mesh)),
        settings.teacher.module(),
        teacher.params,
    )
    batch = {key: value[:, None] for key, value in encoded.items()}
    batch[TEACHER_EMBEDDING] = np.zeros((len(SENTENCES), teacher.config.hidden_size), np.float32)
    _, metrics = jax.device_get(step(state, sharding.global_batch(batch, mesh)))

    def reference_outputs(layers):
        model = transformers.BertModel.from_pretrained(str(scaled_bert_dir), attn_implementation="eager").eval()
        model.encoder.layer = torch.nn.ModuleList([model.encoder.layer[i] for i in layers])
        model.config.num_hidden_layers = len(layers)
        values = []
        model.encoder.layer[-1].attention.self.value.register_forward_hook(lambda m, i, out: values.append(out))
        with torch.no_grad():
            inputs = {k: torch.as_tensor(v) for k, v in encoded.items()}
            out = model(**inputs, output_hidden_states=True, output_attentions=True)
        return out.hidden_states[-1], out.attentions[-1].double(), values[0]

    s_hidden, s_attention, s_value = reference_outputs([1])
    t_hidden, t_attention, t_value = reference_outputs([0, 1])
    mask = torch.as_tensor(encoded["attention_mask"]).bool()
    s_real, t_real = s_hidden[mask], t_hidden[mask]  # [tokens, H]: DistilBERT's masked_select
    if form == "cosine":
        expected_hidden = torch.nn.CosineEmbeddingLoss()(s_real, t_real, torch.ones(len(s_real)))
    else:
        expected_hidden = torch.nn.MSELoss()(s_real, t_real)
    np.testing.assert_allclose(metrics["hidden_loss"], float(expected_hidden), rtol=2e-5)

    heads = teacher.config.num_heads

    def value_relation(value):  # [B, L, H] → softmax(v vᵀ/√d) per head, padded keys masked
        batch, length, width = value.shape
        v = value.double().reshape(batch, length, heads, width // heads).transpose(1, 2)
        scores = v @ v.transpose(-1, -2) / (width // heads) ** 0.5
        return torch.softmax(scores.masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1)

    def minilm_kl(teacher_relation, student_relation):  # Σ over real queries and heads
        kl = torch.where(
            teacher_relation > 0, teacher_relation * (teacher_relation.log() - student_relation.log()), 0.0
        ).sum(-1)  # [B, A, L]
        return kl.masked_select(mask[:, None, :]).sum()

    queries = float(mask.sum()) * heads  # MiniLM: mean over heads and (real) query tokens
    np.testing.assert_allclose(metrics["attention_kl"], float(minilm_kl(t_attention, s_attention)) / queries, rtol=1e-4)
    expected_value = float(minilm_kl(value_relation(t_value), value_relation(s_value))) / queries
    np.testing.assert_allclose(metrics["value_kl"], expected_value, rtol=1e-4)
    assert metrics["attention_kl"] > 1e-3 and metrics["hidden_loss"] > 1e-3  # Not trivially 0.


# ----------------------------------------------------------------------------- the sharded step

TEACHER = step_config().replace(model_type="bert", type_vocab_size=2, num_layers=3)
STUDENT = TEACHER.replace(num_layers=2)  # "cut" from teacher layers 0 and 2
LEARNING_RATE = 0.5


def all_terms(student=STUDENT, **changes) -> DistillSettings:
    settings = DistillSettings(
        student=SentencePipeline(student, pooler="avg", normalize=True),
        teacher=SentencePipeline(TEACHER, pooler="avg", normalize=True),
        temperature=0.1,
        contrastive_weight=0.5,
        relational_weight=0.7,
        relational_temperature=0.2,
        hidden_weight=0.3,
        hidden_layers=(0, 2),
        attention_weight=0.2,
    )
    return dataclasses.replace(settings, **changes)


def make_batch(batch_size=16, length=12, queue_rows=32):
    rng = np.random.default_rng(3)
    ids = rng.integers(5, 100, (batch_size, 1, length)).astype(np.int32)
    mask = np.ones_like(ids)
    for row in range(batch_size):
        mask[row, :, rng.integers(3, length + 1) :] = 0
    valid = np.ones(queue_rows, bool)
    valid[-8:] = False  # slots of batches before step 0
    return {
        "input_ids": np.where(mask == 1, ids, 0).astype(np.int32),
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(ids),
        TEACHER_EMBEDDING: _unit(rng.normal(size=(batch_size, 32))).astype(np.float32),
        TEACHER_QUEUE: _unit(rng.normal(size=(queue_rows, 32))).astype(np.float32),
        TEACHER_QUEUE_VALID: valid,
    }


def run_steps(batch, num_devices, settings, steps=2, student=STUDENT):
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    optimizer = optax.sgd(LEARNING_RATE)
    params = jax.device_get(init_params(student, jax.random.key(0)))
    state = train_state.create_train_state(params, optimizer, 0, sharding.replicated(mesh))
    step = make_distill_step(
        SentenceEncoder(student, pooler="avg"),
        optimizer,
        lambda _: LEARNING_RATE,
        mesh,
        settings,
        train_state.state_shardings(state, sharding.replicated(mesh)),
        SentenceEncoder(TEACHER, pooler="avg"),
        jax.device_get(init_params(TEACHER, jax.random.key(2))),
    )
    history = []
    for _ in range(steps):
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        history.append(jax.device_get(metrics))
    return jax.device_get(state.params), history


def test_every_term_on_eight_devices_equals_one_device():
    """Relational KL over the global batch, hidden states, attention relations and the queue:
    the step's loss and update on 8 devices are the 1-device ones; each term is really on."""
    batch = make_batch()
    one_params, one = run_steps(batch, 1, all_terms())
    eight_params, eight = run_steps(batch, 8, all_terms())
    for name in ("loss", "relational_kl", "hidden_loss", "attention_kl", "value_kl", "contrastive_loss"):
        np.testing.assert_allclose([m[name] for m in eight], [m[name] for m in one], rtol=2e-5, atol=1e-8, err_msg=name)
    assert_trees_close(eight_params, one_params, rtol=2e-5, atol=2e-6)
    first = one[0]
    expected = (
        first["mse"]
        + 0.5 * first["contrastive_loss"]
        + 0.7 * first["relational_kl"]
        + 0.3 * first["hidden_loss"]
        + 0.2 * (first["attention_kl"] + first["value_kl"])
    )
    np.testing.assert_allclose(first["loss"], expected, rtol=1e-6)
    without_queue = {k: v for k, v in batch.items() if not k.startswith("teacher_queue")}
    _, plain = run_steps(without_queue, 8, all_terms(), steps=1)
    assert abs(plain[0]["contrastive_loss"] - first["contrastive_loss"]) > 1e-4  # The queue took part.


def test_relational_step_equals_numpy_on_the_global_batch():
    """The relational term of the sharded step is the numpy KL over all 16 rows (not per device)."""
    batch = make_batch()
    settings = all_terms(contrastive_weight=0.0, hidden_weight=0.0, attention_weight=0.0)
    _, history = run_steps({k: v for k, v in batch.items() if not k.startswith("teacher_queue")}, 8, settings, 1)
    params = jax.device_get(init_params(STUDENT, jax.random.key(0)))
    rows = {k: batch[k][:, 0] for k in ("input_ids", "attention_mask", "token_type_ids")}
    s = np.asarray(embed(settings.student, params, rows))
    expected = numpy_relational(s, batch[TEACHER_EMBEDDING], 0.2)
    np.testing.assert_allclose(history[0]["relational_kl"], expected, rtol=1e-4)


# ----------------------------------------------------------------------------- the queue's data


def test_queue_holds_the_previous_batches_teacher_rows_on_every_host():
    rng = np.random.default_rng(4)
    examples, batch_size, steps = 40, 8, 3
    arrays = {
        "input_ids": rng.integers(0, 50, (examples, 1, 6)).astype(np.int32),
        "attention_mask": np.ones((examples, 1, 6), np.int32),
        TEACHER_EMBEDDING: rng.normal(size=(examples, 4)).astype(np.float32),
    }
    plain = data.TrainData(arrays, batch_size, seed=7)
    queued = QueuedTeacherData.wrap(plain, steps)
    masked_positives = 0
    for step in (0, 2, 5, 9):  # 5 steps an epoch: 5 and 9 reach back across an epoch boundary
        for processes in (1, 2):
            # The teacher rows are distinct random vectors, so a row stands for its example.
            hosts = [plain.batch(step, p, processes)[TEACHER_EMBEDDING] for p in range(processes)]
            current = {tuple(row) for rows in hosts for row in rows}
            for process in range(processes):
                batch = queued.batch(step, process, processes)
                expected_rows, expected_valid = [], []
                for past in (step - 1, step - 2, step - 3):
                    if past < 0:
                        expected_rows.append(np.zeros((batch_size // processes, 4), np.float32))
                        expected_valid.append(np.zeros(batch_size // processes, bool))
                    else:
                        rows = plain.batch(past, process, processes)[TEACHER_EMBEDDING]
                        expected_rows.append(rows)
                        # A past row that is also in the current global batch is a positive, never a negative.
                        expected_valid.append(np.array([tuple(row) not in current for row in rows]))
                        masked_positives += int(sum(tuple(row) in current for row in rows))
                np.testing.assert_array_equal(batch[TEACHER_QUEUE], np.concatenate(expected_rows))
                np.testing.assert_array_equal(batch[TEACHER_QUEUE_VALID], np.concatenate(expected_valid))
                np.testing.assert_array_equal(batch["input_ids"], plain.batch(step, process, processes)["input_ids"])
    assert masked_positives > 0  # the epoch boundary put current examples in the queue
    # The global queue (host slices in process order) holds every row of the past batches.
    both = np.concatenate([queued.batch(4, p, 2)[TEACHER_QUEUE] for p in (0, 1)])
    one = queued.batch(4, 0, 1)[TEACHER_QUEUE]
    assert sorted(map(tuple, both)) == sorted(map(tuple, one))


def test_no_gradient_reaches_the_teacher():
    """The teacher's rows and states are constants of the relational and hidden-state terms."""
    rng = np.random.default_rng(5)
    s = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    gradient = jax.grad(
        lambda t: relations.relational_sums(s, s, t, t, anchor_offset=0, temperature=0.1)["relational_kl"]
    )(t)
    np.testing.assert_array_equal(np.asarray(gradient), 0.0)
    hidden = jax.grad(lambda h: relations.hidden_sums((s[None],), (h[None],), jnp.ones((1, 4)))["hidden_loss"])(t)
    np.testing.assert_array_equal(np.asarray(hidden), 0.0)
