"""SimCSE's sentence poolers (Gao et al. 2021, `simcse/models.py::Pooler`), as pure functions.

'cls' and 'cls_before_pooler' both read the [CLS] vector here; 'cls' additionally runs the
MLP head, which lives in `SentenceEncoder` because it has parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distilface_jax.models.encoder import EncoderOutput

POOLERS = ("cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2")


def masked_mean(hidden, attention_mask):
    """Mean over real tokens. hidden [B, L, H], attention_mask [B, L] → [B, H] (float32)."""
    mask = attention_mask.astype(jnp.float32)[..., None]  # [B, L, 1]
    total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)
    return total / jnp.sum(mask, axis=1)


def pool(pooler: str, output: EncoderOutput, attention_mask) -> jax.Array:
    """[B, H] float32 sentence vectors before any MLP head."""
    hidden_states = output.hidden_states
    if pooler in ("cls", "cls_before_pooler"):
        return output.last_hidden_state[:, 0].astype(jnp.float32)
    if pooler == "avg":
        return masked_mean(output.last_hidden_state, attention_mask)
    if pooler == "avg_first_last":
        # hidden_states[0] is the embedding output; SimCSE averages the first *layer*'s output.
        both = (hidden_states[1].astype(jnp.float32) + hidden_states[-1].astype(jnp.float32)) / 2.0
        return masked_mean(both, attention_mask)
    if pooler == "avg_top2":
        both = (hidden_states[-2].astype(jnp.float32) + hidden_states[-1].astype(jnp.float32)) / 2.0
        return masked_mean(both, attention_mask)
    raise ValueError(f"unknown pooler {pooler!r}; expected one of {POOLERS}")
