"""GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): the exact SimCSE gradient of a global batch whose activations don't fit.

The contrastive loss couples examples only through their embeddings z, so
    ∂L/∂θ = Σ_chunks (∂z_c/∂θ)ᵀ · ∂L/∂z_c.
Three passes, each device working on its local rows chunk by chunk:
  1. embed every chunk without keeping activations (no gradient is taken here);
  2. take ∂L/∂z of the global loss once (z is small: [b, V, H] per device);
  3. re-run each chunk under `jax.checkpoint` and pull ∂L/∂z_c back through it.
Pass 3 is `grad` of the surrogate Σ_c ⟨z_c(θ), stop_gradient(∂L/∂z_c)⟩ over a `lax.scan` of
checkpointed chunks: reverse-mode then stores only each chunk's inputs and recomputes its
activations one chunk at a time (the `jax.vjp` re-run), so peak memory follows the chunk size,
not the global batch. Every chunk re-draws exactly the dropout masks of pass 1, because the
masks are keyed by global example index (see `keys.example_keys`), not by chunk.
The parameter gradient leaves the shard_map once, summed over devices by the transpose of
the parameters' replication: one all-reduce per step, however many chunks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from distilface_jax.training.objective import LossConfig, combine, contrastive_sums, device_embeddings
from distilface_jax.training.sharding import DATA_AXIS


def _split(tree, chunk_size: int):
    """[b, ...] leaves → (n, [n, chunk, ...] leaves, [r, ...] leaves or None), r = b mod chunk."""
    rows = jax.tree_util.tree_leaves(tree)[0].shape[0]
    count, remainder = divmod(rows, chunk_size)
    full = jax.tree_util.tree_map(lambda x: x[: count * chunk_size].reshape((count, chunk_size) + x.shape[1:]), tree)
    rest = jax.tree_util.tree_map(lambda x: x[count * chunk_size :], tree) if remainder else None
    return count, full, rest


def _map_chunks(function, tree, chunk_size: int, first_index):
    """Applies `function(chunk, first_global_index)` chunk by chunk; returns the per-chunk results
    of the full chunks stacked [n, ...] and the remainder's result (or None)."""
    count, full, rest = _split(tree, chunk_size)
    stacked = None
    if count:
        _, stacked = jax.lax.scan(
            lambda carry, xs: (carry, function(xs[1], first_index + xs[0] * chunk_size)),
            None,
            (jnp.arange(count), full),
        )
    tail = function(rest, first_index + count * chunk_size) if rest is not None else None
    return stacked, tail


def make_grad_cache_fn(model, mesh, num_views: int, loss_config: LossConfig, chunk_size: int):
    """`value_and_grad(params, batch, step_key, *, deterministic) -> ((loss, metrics), grads)`,
    equal to the unchunked `jax.value_and_grad(objective.global_loss)` to float32 rounding;
    `chunk_size` examples per chunk, per device (`config.grad_cache_chunk_size`)."""
    if chunk_size < 1:
        raise ValueError(f"grad_cache_chunk_size must be >= 1, got {chunk_size}")
    if loss_config.do_mlm:
        raise ValueError("grad_cache_chunk_size with loss.do_mlm is not supported: turn one of them off")

    def value_and_grad(params, batch, step_key, *, deterministic: bool):
        def first_row(local_batch):
            return jax.lax.axis_index(DATA_AXIS) * local_batch["input_ids"].shape[0]

        def embed(params, chunk, first_index):
            return device_embeddings(model, params, chunk, step_key, first_index, num_views, deterministic)

        def embed_all(params, local_batch):  # Pass 1: [b, V, H], no activations kept.
            stacked, tail = _map_chunks(
                lambda chunk, first: embed(params, chunk, first), local_batch, chunk_size, first_row(local_batch)
            )
            parts = ([] if stacked is None else [stacked.reshape((-1,) + stacked.shape[2:])]) + (
                [] if tail is None else [tail]
            )
            return jnp.concatenate(parts, axis=0)

        z = jax.shard_map(embed_all, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=P(DATA_AXIS))(params, batch)
        z = jax.lax.stop_gradient(z)

        def loss_of_embeddings(z):  # Pass 2: the global loss as a function of the embeddings.
            def per_device(z_local):
                first_index = jax.lax.axis_index(DATA_AXIS) * z_local.shape[0]
                return combine(contrastive_sums(z_local, first_index, loss_config), None, loss_config)

            return jax.shard_map(per_device, mesh=mesh, in_specs=P(DATA_AXIS), out_specs=(P(), P()))(z)

        (loss, metrics), z_cotangent = jax.value_and_grad(loss_of_embeddings, has_aux=True)(z)

        def surrogate(params):  # Pass 3: Σ_c ⟨z_c(θ), ∂L/∂z_c⟩, each chunk rematerialised.
            def per_device(params, local_batch, cotangent):
                @jax.checkpoint
                def chunk_term(params, chunk_and_cotangent, first_index):
                    chunk, chunk_cotangent = chunk_and_cotangent
                    return jnp.sum(embed(params, chunk, first_index) * chunk_cotangent)

                stacked, tail = _map_chunks(
                    lambda pair, first: chunk_term(params, pair, first),
                    (local_batch, cotangent),
                    chunk_size,
                    first_row(local_batch),
                )
                total = sum(term for term in (None if stacked is None else jnp.sum(stacked), tail) if term is not None)
                return jax.lax.psum(total, DATA_AXIS)

            return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), out_specs=P())(
                params, batch, z_cotangent
            )

        return (loss, metrics), jax.grad(surrogate)(params)

    return value_and_grad
