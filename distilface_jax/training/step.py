"""The jitted, sharded SimCSE training step: `train_step(state, batch) -> (state, metrics)`.

Data parallel over the mesh's `data` axis: the loss is `objective.global_loss`, the SimCSE
loss of the whole global batch computed by `jax.shard_map` (each device its own rows).
The gradient is taken *outside* the shard_map, of that replicated global loss, so JAX's
transpose rules give the exact gradient of the global loss: the all-gather transposes to a
reduce-scatter of candidate cotangents, and replicated parameters' gradients come back
already summed over devices. (A pmap-style `pmean(grad)` on top would be wrong by N×;
SimCSE's PyTorch gather, which drops non-local gradients before DDP averages, is 1/N.)
GradCache (`grad_cache.py`) may stand in for `jax.value_and_grad` as `gradient_fn`.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import optax
from jax.sharding import Mesh

from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.training.keys import step_key as make_step_key
from distilface_jax.training.objective import LossConfig, MlmVocabulary, global_loss
from distilface_jax.training.sharding import batch_sharded, replicated
from distilface_jax.training.state import TrainState


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model: SentenceEncoder,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    num_views: int,
    loss_config: LossConfig,
    gradient_fn=None,
    mlm_vocabulary: Optional[MlmVocabulary] = None,
) -> tuple[TrainState, dict]:
    """One AdamW update on the global batch. batch: dict of int32 [B, K, L], sharded on `data`."""
    step_key = make_step_key(state.rng, state.step)
    deterministic = model.config.hidden_dropout == 0.0 and model.config.attention_dropout == 0.0
    loss_fn = functools.partial(
        global_loss,
        model=model,
        mesh=mesh,
        num_views=num_views,
        loss_config=loss_config,
        deterministic=deterministic,
        mlm_vocabulary=mlm_vocabulary,
    )
    if gradient_fn is None:
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, step_key)
    else:  # GradCache: same value and gradient, chunked to bound activation memory.
        (loss, metrics), grads = gradient_fn(state.params, batch, step_key, deterministic=deterministic)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, learning_rate=schedule(state.step), gradient_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_train_step(
    model: SentenceEncoder,
    optimizer,
    schedule,
    mesh: Mesh,
    num_views: int,
    loss_config: LossConfig,
    state_sharding,
    gradient_fn=None,
    mlm_vocabulary: Optional[MlmVocabulary] = None,
):
    """`train_step` bound to its configuration and jitted; the state is donated. `mlm_vocabulary`
    (`MlmVocabulary.of(tokenizer, vocab_size)`) is needed with `loss_config.do_mlm` only."""
    step = functools.partial(
        train_step,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        mesh=mesh,
        num_views=num_views,
        loss_config=loss_config,
        gradient_fn=gradient_fn,
        mlm_vocabulary=mlm_vocabulary,
    )
    return jax.jit(
        step,
        in_shardings=(state_sharding, batch_sharded(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=0,
    )
