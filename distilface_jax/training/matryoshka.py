"""Matryoshka representation learning (Kusupati et al. 2022): one objective summed over the
embedding's leading dimensions, so its first d coordinates are an embedding of their own.

For dimensions d_1 > d_2 > ... (`config.loss.matryoshka_dims`, e.g. (384, 256, 128, 64)) and
weights w_m (`config.loss.matryoshka_weights`, default all 1):

    L = Σ_m w_m · L(z[:, :d_m])

where L is the recipe's own loss of the truncated embeddings: SimCSE's InfoNCE (its cosines
re-normalise the truncated vectors), or distillation's MSE + InfoNCE with student and teacher
embeddings truncated alike (sentence-transformers' `MatryoshkaLoss` around `MSELoss` /
`MultipleNegativesRankingLoss`, which truncates the labels of MSELoss to the embedding's width).
Each term is a loss of the *global* batch (its sums are psum-ed before it is finalised), so the
weighted total is too, on any device count. At inference `--dim D` truncates and re-normalises.

No dimensions (the default, None or ()) is the plain loss: one term, the full width, weight 1.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax

FULL = None  # the "dimension" of the plain loss: no truncation


def resolve(
    dims: Optional[Sequence[int]], weights: Optional[Sequence[float]], width: Optional[int] = None
) -> tuple[tuple, tuple]:
    """((d_1, d_2, ...), (w_1, w_2, ...)), checked (against the embedding width when given);
    ((None,), (1.0,)) when there are no dimensions. Errors name the config key."""
    dims = tuple(int(d) for d in (dims or ()))
    weights = tuple(float(w) for w in (weights or ()))
    if not dims:
        if weights:
            raise ValueError("config.loss.matryoshka_weights is set but config.loss.matryoshka_dims is empty")
        return (FULL,), (1.0,)
    for d in dims:
        if d < 1 or (width is not None and d > width):
            raise ValueError(
                f"config.loss.matryoshka_dims={list(dims)}: {d} is not in 1..{width or 'the width'} "
                "(the embedding width)"
            )
    if len(set(dims)) != len(dims):
        raise ValueError(f"config.loss.matryoshka_dims={list(dims)}: a dimension is listed twice")
    if weights and len(weights) != len(dims):
        raise ValueError(
            f"config.loss.matryoshka_weights={list(weights)}: one weight per dimension of "
            f"config.loss.matryoshka_dims={list(dims)} (or none: all 1)"
        )
    return dims, weights or (1.0,) * len(dims)


def truncate(x: Optional[jax.Array], dim: Optional[int]) -> Optional[jax.Array]:
    """The leading `dim` coordinates of [..., D] embeddings (all of them for None)."""
    if x is None or dim is FULL:
        return x
    return x[..., :dim]


def weighted_total(term_losses: Sequence[jax.Array], weights: Sequence[float]) -> jax.Array:
    """Σ_m w_m · L_m; a single term of weight 1 comes back unchanged (the plain loss, bit for bit)."""
    if len(term_losses) == 1 and weights[0] == 1.0:
        return term_losses[0]
    total = weights[0] * term_losses[0]
    for weight, loss in zip(weights[1:], term_losses[1:]):
        total = total + weight * loss
    return total


def term_metrics(dims: Sequence[Optional[int]], term_losses: Sequence[jax.Array]) -> dict:
    """`loss_dim{d}` of every term (nothing for the plain loss)."""
    if dims == (FULL,):
        return {}
    return {f"loss_dim{d}": loss for d, loss in zip(dims, term_losses)}
