"""Train state, optimizer and schedule, built directly with the shardings they will live in."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes. The data position is `step`: the data order is a
    pure function of (seed, step), so nothing else about the data needs saving."""

    step: jax.Array  # int32 scalar: optimizer updates done so far
    params: Any  # SentenceEncoder parameter tree, float32
    opt_state: Any
    rng: jax.Array  # uint32[2] base key; each step uses fold_in(rng, step)


def learning_rate_schedule(learning_rate: float, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """HF Trainer's `linear` schedule (SimCSE's): optional linear warm-up, then linear decay to 0."""
    decay = optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup_steps, 1))
    if not warmup_steps:
        return decay
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def _decay_mask(params):
    """HF Trainer decays every weight except biases and LayerNorm scales."""
    def decays(path, _):
        name = path[-1].key if hasattr(path[-1], "key") else str(path[-1])
        return name not in ("bias", "scale")
    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW as in SimCSE's HF Trainer: clip at global norm 1.0, ε 1e-8, weight decay 0 by default."""
    schedule = learning_rate_schedule(config.learning_rate, config.total_steps, config.warmup_steps)
    transforms = []
    if config.max_grad_norm > 0:
        transforms.append(optax.clip_by_global_norm(config.max_grad_norm))
    transforms.append(optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                                  weight_decay=config.weight_decay, mask=_decay_mask))
    return optax.chain(*transforms), schedule


def create_train_state(params, optimizer: optax.GradientTransformation, seed: int, replicated) -> TrainState:
    """State placed with `replicated` sharding; the optimizer state is created on device, sharded.

    Following big_vision: the state's shapes come from `jax.eval_shape` and `jit(..., out_shardings=)`
    builds it in place, so no host ever holds a second full copy.
    """
    def build(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                          rng=jax.random.PRNGKey(seed))

    shapes = jax.eval_shape(build, params)
    shardings = jax.tree_util.tree_map(lambda _: replicated, shapes)
    return jax.jit(build, out_shardings=shardings)(params)


def state_shardings(state: TrainState, replicated):
    return jax.tree_util.tree_map(lambda _: replicated, state)
