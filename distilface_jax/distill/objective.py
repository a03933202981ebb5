"""The distillation objective: pure functions of student and teacher embeddings.

For student embeddings s_i (after the optional projection W: D_s → D_t) and teacher
embeddings t_i of a global batch of B examples, both [B, D]:

    L_mse = 1/(B·D) Σ_i ‖s_i − t_i‖²                               (Reimers & Gurevych 2020;
                                                                    torch.nn.MSELoss, mean)
    L_con = −1/B Σ_i log( exp(cos(s_i, t_i)/τ) / Σ_j exp(cos(s_i, t_j)/τ) )
    L     = L_mse + w · L_con

L_con is InfoNCE with the student's embedding as the anchor and every teacher embedding of the
global batch as a candidate (`losses.simcse_loss_local` with z1 = s, z2 = t). The teacher is
a constant: no gradient reaches it.

Matryoshka (`training/matryoshka.py`, `config.loss.matryoshka_dims`): L is summed over the
leading dimensions d_m with weights w_m, student and teacher embeddings truncated alike
(sentence-transformers' MatryoshkaLoss around MSELoss truncates the labels the same way):
    L = Σ_m w_m · (L_mse + w · L_con)(s[:, :d_m], t[:, :d_m])

Queue (`distill.queue_steps` = K): the InfoNCE candidates also hold the teacher embeddings
of the K previous global batches, as negatives only (q_k, masked while fewer than K batches
have passed):
    L_con = −1/B Σ_i log( exp(cos(s_i, t_i)/τ) / (Σ_j exp(cos(s_i, t_j)/τ) + Σ_k exp(cos(s_i, q_k)/τ)) )
MoCo keeps its queue as training state because its key encoder moves; a distillation teacher is
frozen, so the queue is a function of the data order alone: the data hands it over with each
batch (`distill/queue.py`), which keeps resume bit-identical with nothing added to the checkpoint.

The relational, hidden-state and attention-relation terms (`relations.py`) add
    L += w_rel · L_rel + w_hid · L_hid + w_att · L_att
once, at the full width (not per Matryoshka dimension).

Sharding: every term is a sum over anchors, so each device sums its local rows (against the
all-gathered teacher embeddings for L_con), the sums are psum-ed, and `finalize` divides by
the global counts. The result is the loss of the global batch, whatever the device count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distilface_jax.training import losses, matryoshka

Array = jax.Array


def distill_sums(
    s_local: Array,
    t_local: Array,
    t_global: Array | None,
    *,
    anchor_offset: int | Array = 0,
    temperature: float = 0.05,
    contrastive_weight: float = 0.0,
    queue: Array | None = None,
    queue_valid: Array | None = None,
) -> dict[str, Array]:
    """Psum-able sums for b local rows.

    Args:
      s_local: [b, D] student embeddings (projected to the teacher's width), rows
        anchor_offset .. anchor_offset+b-1 of the global batch.
      t_local: [b, D] the teacher embeddings of the same rows.
      t_global: [B, D] all teacher embeddings of the global batch (needed only when
        contrastive_weight > 0; None otherwise).
      queue: [Q, D] teacher embeddings of past batches, extra InfoNCE negatives; queue_valid
        [Q] bool, False for slots no batch has filled yet.
    """
    s_local = s_local.astype(jnp.float32)
    t_local = jax.lax.stop_gradient(t_local.astype(jnp.float32))
    squared_error = jnp.sum(jnp.square(s_local - t_local))
    cosine = jnp.sum(losses.l2_normalize(s_local) * losses.l2_normalize(t_local))
    sums = {
        "squared_error": squared_error,
        "num_anchors": jnp.asarray(s_local.shape[0], jnp.float32),
        "num_values": jnp.asarray(s_local.size, jnp.float32),
        "teacher_cosine": cosine,
    }
    if contrastive_weight:
        _, contrastive = losses.simcse_loss_local(
            s_local,
            jax.lax.stop_gradient(t_global),
            anchor_offset=anchor_offset,
            temperature=temperature,
            extra_negatives=None if queue is None else jax.lax.stop_gradient(queue.astype(t_global.dtype)),
            extra_valid=None if queue_valid is None else queue_valid.astype(jnp.bool_),
        )
        sums.update(contrastive_loss=contrastive["loss"], correct=contrastive["correct"])
    return sums


def finalize(sums: dict[str, Array], contrastive_weight: float = 0.0) -> tuple[Array, dict[str, Array]]:
    """(loss, metrics) from (psum-ed) sums: L = L_mse + w · L_con."""
    mse = sums["squared_error"] / sums["num_values"]
    metrics = {"mse": mse, "teacher_cosine": sums["teacher_cosine"] / sums["num_anchors"]}
    loss = mse
    if contrastive_weight:
        contrastive = sums["contrastive_loss"] / sums["num_anchors"]
        metrics.update(contrastive_loss=contrastive, accuracy=sums["correct"] / sums["num_anchors"])
        loss = loss + contrastive_weight * contrastive
    metrics["loss"] = loss
    return loss, metrics


def matryoshka_sums(
    s_local: Array,
    t_local: Array,
    t_global: Array | None,
    dims: tuple,
    *,
    anchor_offset: int | Array = 0,
    temperature: float = 0.05,
    contrastive_weight: float = 0.0,
    queue: Array | None = None,
    queue_valid: Array | None = None,
) -> list[dict[str, Array]]:
    """`distill_sums` of the first d coordinates of s and t, one dict per dimension d in `dims`
    (`matryoshka.resolve`: (None,) is the full width alone)."""
    return [
        distill_sums(
            matryoshka.truncate(s_local, dim),
            matryoshka.truncate(t_local, dim),
            matryoshka.truncate(t_global, dim),
            anchor_offset=anchor_offset,
            temperature=temperature,
            contrastive_weight=contrastive_weight,
            queue=None if queue is None else matryoshka.truncate(queue, dim),
            queue_valid=queue_valid,
        )
        for dim in dims
    ]


def finalize_matryoshka(
    per_dim: list[dict[str, Array]], dims: tuple, weights: tuple, contrastive_weight: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """(Σ_m w_m L_m, metrics) from (psum-ed) per-dimension sums; metrics other than the loss are
    the first dimension's."""
    finalized = [finalize(sums, contrastive_weight) for sums in per_dim]
    term_losses = [loss for loss, _ in finalized]
    loss = matryoshka.weighted_total(term_losses, weights)
    metrics = dict(finalized[0][1])
    metrics.update(matryoshka.term_metrics(dims, term_losses), loss=loss)
    return loss, metrics


def distill_loss(
    s: Array,
    t: Array,
    *,
    temperature: float = 0.05,
    contrastive_weight: float = 0.0,
    matryoshka_dims: tuple = (),
    matryoshka_weights: tuple = (),
) -> tuple[Array, dict[str, Array]]:
    """The loss of a whole batch on one device: s, t [B, D]."""
    dims, weights = matryoshka.resolve(matryoshka_dims, matryoshka_weights, s.shape[-1])
    per_dim = matryoshka_sums(
        s,
        t,
        t if contrastive_weight else None,
        dims,
        temperature=temperature,
        contrastive_weight=contrastive_weight,
    )
    return finalize_matryoshka(per_dim, dims, weights, contrastive_weight)


def finalize_relations(
    sums: dict[str, Array], *, relational_weight: float = 0.0, hidden_weight: float = 0.0, attention_weight: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """(w_rel·L_rel + w_hid·L_hid + w_att·L_att, metrics) from (psum-ed) `relations` sums;
    `num_anchors` is the global batch size B."""
    total, metrics = jnp.zeros((), jnp.float32), {}
    if relational_weight:
        metrics["relational_kl"] = sums["relational_kl"] / sums["num_anchors"]
        total = total + relational_weight * metrics["relational_kl"]
    if hidden_weight:
        metrics["hidden_loss"] = sums["hidden_loss"] / sums["hidden_tokens"]
        total = total + hidden_weight * metrics["hidden_loss"]
    if attention_weight:
        metrics["attention_kl"] = sums["attention_kl"] / sums["attention_queries"]
        metrics["value_kl"] = sums["value_kl"] / sums["attention_queries"]
        total = total + attention_weight * (metrics["attention_kl"] + metrics["value_kl"])
    return total, metrics
