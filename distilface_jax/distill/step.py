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

from distilface_jax.distill import objective
from distilface_jax.evaluation.inference import PROJECTION
from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.training import losses, matryoshka, step as train_step
from distilface_jax.training.keys import example_keys
from distilface_jax.training.objective import LossConfig
from distilface_jax.training.sharding import DATA_AXIS, batch_sharded, replicated

TEACHER_EMBEDDING = "teacher_embedding"  # batch key of cached teacher embeddings, float32 [B, D]
TEACHER_PREFIX = "teacher_"  # batch keys of the teacher's own tokens (teacher in the step)
_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclasses.dataclass(frozen=True)
class DistillSettings:
    apply_mlp: bool = True  # the student's MLP head, as at evaluation (cls pooler only)
    normalize: bool = False  # student embeddings L2-normalised, as the teacher's are
    teacher_normalize: bool = False  # only for the teacher in the step
    teacher_apply_mlp: bool = True
    temperature: float = 0.05
    contrastive_weight: float = 0.0
    matryoshka_dims: tuple = ()  # config.loss.matryoshka_dims (training/matryoshka.py); () = plain
    matryoshka_weights: tuple = ()


def _rows(batch: dict, prefix: str = "") -> dict:
    """[b, 1, L] token arrays (named with `prefix`) → [b, L] rows named as the model expects."""
    return {key: batch[prefix + key][:, 0] for key in _TOKEN_KEYS if prefix + key in batch}


def _apply(model: SentenceEncoder, params, rows: dict, *, apply_mlp: bool, deterministic: bool, key=None):
    return model.apply(
        {"params": params},
        rows["input_ids"],
        rows["attention_mask"],
        rows.get("token_type_ids"),
        deterministic=deterministic,
        apply_mlp=apply_mlp,
        rngs=None if deterministic else {"dropout": key},
    )


def student_embeddings(
    model: SentenceEncoder, params: dict, rows: dict, keys: jax.Array, settings: DistillSettings, deterministic: bool
) -> jax.Array:
    """[b, L] rows, [b] dropout keys → [b, D_t] float32: pool → [projection] → [normalize].

    vmap over rows gives each example its own dropout mask (device-count invariant)."""
    encoder_params = {name: value for name, value in params.items() if name != PROJECTION}

    def one(row, key):
        row = {name: value[None] for name, value in row.items()}
        return _apply(model, encoder_params, row, apply_mlp=settings.apply_mlp, deterministic=deterministic, key=key)[0]

    s = jax.vmap(one)(rows, keys)  # [b, D_s]
    if PROJECTION in params:
        projection = params[PROJECTION]
        s = jnp.matmul(s, projection["kernel"], precision=jax.lax.Precision.HIGHEST) + projection["bias"]  # [b, D_t]
    return losses.l2_normalize(s) if settings.normalize else s


def teacher_embeddings(
    teacher: SentenceEncoder, teacher_params: dict, rows: dict, settings: DistillSettings
) -> jax.Array:
    """The frozen teacher in the step: [b, L_t] rows → [b, D_t], deterministic, no gradient."""
    t = _apply(teacher, teacher_params, rows, apply_mlp=settings.teacher_apply_mlp, deterministic=True)
    t = losses.l2_normalize(t) if settings.teacher_normalize else t
    return jax.lax.stop_gradient(t)


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
