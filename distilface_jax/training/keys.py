"""The project's one PRNG-key style: typed keys (`jax.random.key`) everywhere, with the train
state holding the raw key data (uint32[2]) that checkpoints store.

`state_key_data(seed)` has exactly the bits of the legacy `jax.random.PRNGKey(seed)` that
earlier runs saved, and `step_key` wraps them back into a typed key, so old checkpoints resume
onto the same random stream.

Dropout keys are per *example*: key(i, v) = fold_in(fold_in(fold_in(rng, step), i), v) for
global example index i and view v. The masks therefore do not depend on how the batch is
split over devices, hosts or GradCache chunks, so a run resumed on another device count,
or chunked, draws the very same masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def state_key_data(seed: int) -> jax.Array:
    """uint32[2]: the raw data of `jax.random.key(seed)`, as the train state stores it."""
    return jax.random.key_data(jax.random.key(seed))


def step_key(key_data: jax.Array, step) -> jax.Array:
    """The typed key of one step: fold_in(rng, step)."""
    return jax.random.fold_in(jax.random.wrap_key_data(key_data), step)


def example_keys(step_key: jax.Array, first_index, count: int, num_views: int) -> jax.Array:
    """[count, V] keys: one per (global example index, view)."""
    indices = first_index + jnp.arange(count)
    per_example = jax.vmap(jax.random.fold_in, (None, 0))(step_key, indices)
    return jax.vmap(lambda key: jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(num_views)))(per_example)
