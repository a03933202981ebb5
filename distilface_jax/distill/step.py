"""The distillation gradient, plugged into the shared `train_step` (same optimizer, schedule,
per-example dropout keys, metrics) through its `gradient_fn` hook.

Per device (shard_map over `data`): embed the local student rows, take the local teacher
embeddings (read from the batch when cached, or computed here by the frozen teacher, without
dropout and without gradient), sum the objective's terms, psum. The value and gradient are
those of the global batch: a replicated parameter's gradient comes back summed over devices,
which is the gradient of the psum-ed loss (see training/step.py).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from distilface_jax.distill import objective, relations
from distilface_jax.models import sentence_pipeline
from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.training import matryoshka, step as train_step
from distilface_jax.training.keys import example_keys
from distilface_jax.training.objective import LossConfig
from distilface_jax.training.sharding import DATA_AXIS, batch_sharded, replicated

TEACHER_EMBEDDING = "teacher_embedding"  # batch key of cached teacher embeddings, float32 [B, D]
TEACHER_QUEUE = "teacher_queue"  # the K previous batches' teacher embeddings, float32 [K·B, D] (queue.py)
TEACHER_QUEUE_VALID = "teacher_queue_valid"  # [K·B] bool: False where no batch has been yet
TEACHER_PREFIX = "teacher_"  # batch keys of the teacher's own tokens (teacher in the step)
_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclasses.dataclass(frozen=True)
class DistillSettings:
    """What the distillation gradient computes: the student's pipeline as trained (its width map
    D_s → D_t when the widths differ, normalised as the teacher is), the teacher's own pipeline
    (used only when the teacher runs in the step) and the objective's two settings."""

    student: SentencePipeline
    teacher: Optional[SentencePipeline] = None
    temperature: float = 0.05
    contrastive_weight: float = 0.0
    matryoshka_dims: tuple = ()  # config.loss.matryoshka_dims (training/matryoshka.py); () = plain
    matryoshka_weights: tuple = ()
    relational_weight: float = 0.0  # relations.py; each 0 = off
    relational_temperature: float = 0.05
    hidden_weight: float = 0.0
    hidden_loss: str = "cosine"
    hidden_layers: tuple = ()  # the teacher layer each student layer was cut from
    attention_weight: float = 0.0

    @property
    def needs_teacher_features(self) -> bool:
        """Token-level terms: the teacher runs in the step on the student's own rows."""
        return bool(self.hidden_weight or self.attention_weight)


def _rows(batch: dict, prefix: str = "") -> dict:
    """[b, 1, L] token arrays (named with `prefix`) → [b, L] rows named as the model expects."""
    return {key: batch[prefix + key][:, 0] for key in _TOKEN_KEYS if prefix + key in batch}


def student_embeddings(
    model: SentenceEncoder,
    params: dict,
    rows: dict,
    keys: jax.Array,
    settings: DistillSettings,
    deterministic: bool,
    features: bool = False,
):
    """[b, L] rows, [b] dropout keys → [b, D_t] float32, the student's pipeline with its own
    dropout mask per example (device-count invariant); with `features`, also its EncoderFeatures."""
    return sentence_pipeline.embed(
        settings.student, params, rows, model=model, keys=keys, deterministic=deterministic, features=features
    )


def teacher_embeddings(
    teacher: SentenceEncoder, teacher_params: dict, rows: dict, settings: DistillSettings
) -> jax.Array:
    """The frozen teacher in the step: [b, L_t] rows → [b, D_t], its own pipeline, deterministic, no gradient."""
    return jax.lax.stop_gradient(sentence_pipeline.embed(settings.teacher, teacher_params, rows, model=teacher))


def _relation_sums(s, t, t_global, s_features, rows, first_index, teacher, teacher_params, settings) -> dict:
    """Psum-able sums of the relational, hidden-state and attention terms that are on ({} if none)."""
    sums = {}
    if settings.relational_weight:
        s_global = jax.lax.all_gather(s, DATA_AXIS, tiled=True)  # [B, D]; its transpose sums the gradient back
        sums.update(
            relations.relational_sums(
                s, s_global, t, t_global, anchor_offset=first_index, temperature=settings.relational_temperature
            ),
            num_anchors=jnp.asarray(s.shape[0], jnp.float32),
        )
    if settings.needs_teacher_features:
        # The cut student reads the teacher's own tokens: the teacher runs on the same rows.
        _, t_features = sentence_pipeline.embed(settings.teacher, teacher_params, rows, model=teacher, features=True)
        t_features = jax.lax.stop_gradient(t_features)
        if settings.hidden_weight:
            sums.update(
                relations.hidden_sums(
                    s_features.hidden_states[1:],  # each student layer's output
                    tuple(t_features.hidden_states[layer + 1] for layer in settings.hidden_layers),
                    rows["attention_mask"],
                    form=settings.hidden_loss,
                )
            )
        if settings.attention_weight:
            sums.update(
                relations.attention_sums(
                    (s_features.last_query, s_features.last_key, s_features.last_value),
                    (t_features.last_query, t_features.last_key, t_features.last_value),
                    rows["attention_mask"],
                )
            )
    return sums


def distill_value_and_grad(
    params,
    batch: dict,
    step_key,
    *,
    deterministic: bool,
    model: SentenceEncoder,
    teacher: Optional[SentenceEncoder],
    teacher_params,
    mesh: Mesh,
    settings: DistillSettings,
):
    """((loss, metrics), grads) of the global batch; the signature of train_step's gradient_fn."""

    def per_device(params, local_batch, step_key, teacher_params):
        count = local_batch["input_ids"].shape[0]
        first_index = jax.lax.axis_index(DATA_AXIS) * count
        keys = example_keys(step_key, first_index, count, 1)[:, 0]  # [b]
        rows = _rows(local_batch)
        features = settings.needs_teacher_features
        s = student_embeddings(model, params, rows, keys, settings, deterministic, features)
        s, s_features = s if features else (s, None)
        if TEACHER_EMBEDDING in local_batch:  # cached
            t = local_batch[TEACHER_EMBEDDING]
        else:
            t = teacher_embeddings(teacher, teacher_params, _rows(local_batch, TEACHER_PREFIX), settings)
        gather = lambda x: jax.lax.all_gather(x, DATA_AXIS, tiled=True)  # [b, ...] → [B, ...]
        t_global = gather(t) if settings.contrastive_weight or settings.relational_weight else None
        queue = queue_valid = None
        if TEACHER_QUEUE in local_batch:  # [K·b, D] here → [K·B, D], every past batch's rows
            queue, queue_valid = gather(local_batch[TEACHER_QUEUE]), gather(local_batch[TEACHER_QUEUE_VALID])
        dims, weights = matryoshka.resolve(settings.matryoshka_dims, settings.matryoshka_weights, s.shape[-1])
        per_dim = objective.matryoshka_sums(
            s,
            t,
            t_global,
            dims,
            anchor_offset=first_index,
            temperature=settings.temperature,
            contrastive_weight=settings.contrastive_weight,
            queue=queue,
            queue_valid=queue_valid,
        )
        extra = _relation_sums(s, t, t_global, s_features, rows, first_index, teacher, teacher_params, settings)
        loss, metrics = objective.finalize_matryoshka(
            jax.lax.psum(per_dim, DATA_AXIS), dims, weights, settings.contrastive_weight
        )
        if not extra:
            return loss, metrics
        extra_loss, extra_metrics = objective.finalize_relations(
            jax.lax.psum(extra, DATA_AXIS),
            relational_weight=settings.relational_weight,
            hidden_weight=settings.hidden_weight,
            attention_weight=settings.attention_weight,
        )
        loss = loss + extra_loss
        return loss, {**metrics, **extra_metrics, "loss": loss}

    def loss_fn(params):
        return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(), P()), out_specs=(P(), P()))(
            params, batch, step_key, teacher_params
        )

    return jax.value_and_grad(loss_fn, has_aux=True)(params)


def make_distill_step(
    model: SentenceEncoder,
    optimizer,
    schedule,
    mesh: Mesh,
    settings: DistillSettings,
    state_sharding,
    teacher: Optional[SentenceEncoder] = None,
    teacher_params=None,
):
    """`step(state, batch) -> (state, metrics)`, jitted, state donated. The teacher's params
    are a (replicated) argument, not a constant baked into the compiled program."""

    def step(state, batch, teacher_params):
        gradient_fn = functools.partial(
            distill_value_and_grad,
            model=model,
            teacher=teacher,
            teacher_params=teacher_params,
            mesh=mesh,
            settings=settings,
        )
        return train_step.train_step(
            state,
            batch,
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            mesh=mesh,
            num_views=1,
            loss_config=LossConfig(),
            gradient_fn=gradient_fn,
        )

    jitted = jax.jit(
        step,
        in_shardings=(state_sharding, batch_sharded(mesh), replicated(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=0,
    )
    placed = jax.device_put(teacher_params if teacher is not None else {}, replicated(mesh))
    return lambda state, batch: jitted(state, batch, placed)
