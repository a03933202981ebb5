"""The train state, built directly with the sharding it will live in."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from distilface_jax.training.keys import state_key_data


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes. The data position is `step`: the data order is a
    pure function of (seed, step), so nothing else about the data needs saving."""

    step: jax.Array  # int32 scalar: optimizer updates done so far
    params: Any  # SentenceEncoder parameter tree, float32
    opt_state: Any
    rng: jax.Array  # uint32[2] raw data of the base key (keys.py); each step uses fold_in(rng, step)


def create_train_state(params, optimizer: optax.GradientTransformation, seed: int, replicated) -> TrainState:
    """State placed with `replicated` sharding; the optimizer state is created on device, sharded.

    Following big_vision: the state's shapes come from `jax.eval_shape` and `jit(..., out_shardings=)`
    builds it in place, so no host ever holds a second full copy.
    """

    def build(params):
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=state_key_data(seed)
        )

    shapes = jax.eval_shape(build, params)
    shardings = jax.tree_util.tree_map(lambda _: replicated, shapes)
    return jax.jit(build, out_shardings=shardings)(params)


def state_shardings(state: TrainState, replicated):
    return jax.tree_util.tree_map(lambda _: replicated, state)
