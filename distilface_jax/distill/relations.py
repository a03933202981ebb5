"""Distillation terms beyond the pooled embedding: pure functions returning psum-able sums.

Relational (in-batch similarity) distillation, over the **global** batch of B examples. For
anchor i and every other example j ≠ i:

    p_t(j | i) = softmax_j( cos(t_i, t_j) / τ_r ),   p_s(j | i) = softmax_j( cos(s_i, s_j) / τ_r )
    L_rel = 1/B Σ_i KL( p_t(· | i) ‖ p_s(· | i) )

The student matches how the teacher arranges the whole batch, not only each point (CKD /
DistilCSE's relational term; "relational knowledge distillation", Park et al. 2019). The more
examples the batch holds the more relations each step teaches: all-gathering s over every
device and host makes a pod's global batch the candidate set, exactly (8 devices == 1).

Hidden-state distillation of a student cut from the teacher's layers: student layer ℓ's
output h_s^ℓ against the output of the teacher layer it was copied from, h_t^{m(ℓ)}, over the
real (unpadded) tokens of the batch:

    cosine (DistilBERT's `CosineEmbeddingLoss`, target 1):  1 − cos(h_s^ℓ[n], h_t^{m(ℓ)}[n])
    mse:                                                     1/H ‖h_s^ℓ[n] − h_t^{m(ℓ)}[n]‖²
    L_hid = mean over the k layers and the global batch's real tokens n.

Attention-relation distillation of the last layer (MiniLM, Wang et al. 2020), per head a of
A heads and per real query token n, keys masked where padded:

    A   = softmax( q kᵀ / √d ),   VR = softmax( v vᵀ / √d )
    L_att = mean over heads and the global batch's real queries of
            KL( A_t[a, n] ‖ A_s[a, n] ) + KL( VR_t[a, n] ‖ VR_s[a, n] )

The teacher is a constant: no gradient reaches it (stop_gradient on every teacher input).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from distilface_jax.training import losses

Array = jax.Array


def _kl_rows(log_p: Array, log_q: Array, keep: Array) -> Array:
    """Σ over kept entries of p (log p − log q), both log-distributions over the last axis."""
    return jnp.sum(jnp.where(keep, jnp.exp(log_p) * (log_p - log_q), 0.0))


def relational_sums(
    s_local: Array, s_global: Array, t_local: Array, t_global: Array, *, anchor_offset, temperature: float
) -> dict[str, Array]:
    """Σ_i KL(p_t(·|i) ‖ p_s(·|i)) over b local anchors; s/t_local [b, D] are rows
    anchor_offset.. of s/t_global [B, D] (the student's carry their gradient through the gather)."""
    b, B = s_local.shape[0], s_global.shape[0]
    other = ~jax.nn.one_hot(anchor_offset + jnp.arange(b), B, dtype=jnp.bool_)  # [b, B]: j ≠ i

    def log_distribution(local, candidates):  # [b, B]
        logits = losses.cosine_matrix(local, candidates) / temperature
        return jax.nn.log_softmax(jnp.where(other, logits, losses.MASKED_LOGIT), axis=-1)

    log_p_t = log_distribution(jax.lax.stop_gradient(t_local), jax.lax.stop_gradient(t_global))
    log_p_s = log_distribution(s_local, s_global)
    return {"relational_kl": _kl_rows(log_p_t, log_p_s, other)}


def hidden_sums(
    student_hidden: tuple, teacher_hidden: tuple, attention_mask: Array, *, form: str = "cosine"
) -> dict[str, Array]:
    """Σ over the k layer pairs and this device's real tokens of the per-token loss.

    student_hidden, teacher_hidden: k arrays [b, L, H] each, pair ℓ = (student layer ℓ's
    output, its source teacher layer's output). attention_mask [b, L]: 1 for real tokens.
    """
    real = attention_mask.astype(jnp.float32)  # [b, L]
    total = jnp.zeros((), jnp.float32)
    for h_s, h_t in zip(student_hidden, teacher_hidden, strict=True):
        h_s, h_t = h_s.astype(jnp.float32), jax.lax.stop_gradient(h_t.astype(jnp.float32))
        if form == "cosine":
            per_token = 1.0 - jnp.sum(losses.l2_normalize(h_s) * losses.l2_normalize(h_t), axis=-1)  # [b, L]
        elif form == "mse":
            per_token = jnp.mean(jnp.square(h_s - h_t), axis=-1)  # [b, L]
        else:
            raise ValueError(f"hidden-state loss {form!r} is not one of cosine, mse")
        total = total + jnp.sum(per_token * real)
    return {"hidden_loss": total, "hidden_tokens": jnp.sum(real) * len(student_hidden)}


def _relation_log_softmax(x: Array, y: Array, key_is_real: Array) -> Array:
    """log softmax over keys of x yᵀ / √d per head: x, y [b, L, A, d] → [b, A, L, L]."""
    scores = jnp.einsum("bqad,bkad->baqk", x.astype(jnp.float32), y.astype(jnp.float32)) / math.sqrt(x.shape[-1])
    return jax.nn.log_softmax(jnp.where(key_is_real, scores, losses.MASKED_LOGIT), axis=-1)


def attention_sums(student: tuple, teacher: tuple, attention_mask: Array) -> dict[str, Array]:
    """Σ over heads and this device's real queries of KL(A_t ‖ A_s) + KL(VR_t ‖ VR_s).

    student, teacher: (query, key, value) of the last layer, each [b, L, A, d] (the same A;
    d may differ). attention_mask [b, L].
    """
    key_is_real = attention_mask[:, None, None, :].astype(jnp.bool_)  # [b, 1, 1, L]
    query_is_real = attention_mask[:, None, :, None].astype(jnp.bool_)  # [b, 1, L, 1]
    keep = key_is_real & query_is_real  # [b, 1, L, L]
    q_s, k_s, v_s = student
    q_t, k_t, v_t = (jax.lax.stop_gradient(x) for x in teacher)
    attention = _kl_rows(
        _relation_log_softmax(q_t, k_t, key_is_real), _relation_log_softmax(q_s, k_s, key_is_real), keep
    )
    value = _kl_rows(_relation_log_softmax(v_t, v_t, key_is_real), _relation_log_softmax(v_s, v_s, key_is_real), keep)
    heads = q_s.shape[2]
    return {
        "attention_kl": attention,
        "value_kl": value,
        "attention_queries": jnp.sum(attention_mask.astype(jnp.float32)) * heads,
    }
