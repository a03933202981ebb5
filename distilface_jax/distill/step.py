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
from jax.sharding import Mesh, PartitionSpec as P

from distilface_jax.distill import objective
from distilface_jax.models import sentence_pipeline
from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.training import matryoshka, step as train_step
from distilface_jax.training.keys import example_keys
from distilface_jax.training.objective import LossConfig
from distilface_jax.training.sharding import DATA_AXIS, batch_sharded, replicated

TEACHER_EMBEDDING = "teacher_embedding"  # batch key of cached teacher embeddings, float32 [B, D]
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


def _rows(batch: dict, prefix: str = "") -> dict:
    """[b, 1, L] token arrays (named with `prefix`) → [b, L] rows named as the model expects."""
    return {key: batch[prefix + key][:, 0] for key in _TOKEN_KEYS if prefix + key in batch}


def student_embeddings(
    model: SentenceEncoder, params: dict, rows: dict, keys: jax.Array, settings: DistillSettings, deterministic: bool
) -> jax.Array:
    """[b, L] rows, [b] dropout keys → [b, D_t] float32, the student's pipeline with its own
    dropout mask per example (device-count invariant)."""
    return sentence_pipeline.embed(settings.student, params, rows, model=model, keys=keys, deterministic=deterministic)


def teacher_embeddings(
    teacher: SentenceEncoder, teacher_params: dict, rows: dict, settings: DistillSettings
) -> jax.Array:
    """The frozen teacher in the step: [b, L_t] rows → [b, D_t], its own pipeline, deterministic, no gradient."""
    return jax.lax.stop_gradient(sentence_pipeline.embed(settings.teacher, teacher_params, rows, model=teacher))


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
        s = student_embeddings(model, params, _rows(local_batch), keys, settings, deterministic)
        if teacher is None:
            t = local_batch[TEACHER_EMBEDDING]
        else:
            t = teacher_embeddings(teacher, teacher_params, _rows(local_batch, TEACHER_PREFIX), settings)
        t_global = jax.lax.all_gather(t, DATA_AXIS, tiled=True) if settings.contrastive_weight else None
        dims, weights = matryoshka.resolve(settings.matryoshka_dims, settings.matryoshka_weights, s.shape[-1])
        per_dim = objective.matryoshka_sums(
            s,
            t,
            t_global,
            dims,
            anchor_offset=first_index,
            temperature=settings.temperature,
            contrastive_weight=settings.contrastive_weight,
        )
        return objective.finalize_matryoshka(
            jax.lax.psum(per_dim, DATA_AXIS), dims, weights, settings.contrastive_weight
        )

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
