"""SimCSE contrastive loss (InfoNCE over the global batch) and the auxiliary MLM loss.

Everything here is a pure function of arrays: no encoder, no parameters, no state. The
training step embeds the batch, then calls these.

SimCSE (Gao et al., 2021, eq. 1 and 5): for anchors z1_i, positives z2_i and optional hard
negatives z3_i,

    ℓ_i = -log  exp(sim(z1_i, z2_i)/τ)
               / (Σ_j exp(sim(z1_i, z2_j)/τ) + Σ_j exp(sim(z1_i, z3_j)/τ + w·[j = i]))

with sim = cosine. τ = 0.05 is `scale = 1/τ = 20` in sentence-transformers'
MultipleNegativesRankingLoss, which is the same loss. w is SimCSE's `hard_negative_weight`;
its reference code adds w to the logit of each anchor's *own* hard negative ("weights are
actually logits of weights"), so w = 0 (the published recipe) leaves the loss untouched.

Sharding: the global-batch loss is a sum of per-anchor terms, so each device can hold only
its local anchors against the gathered global candidates (`simcse_loss_local`), return sums,
and let the caller `psum` them and divide by the global batch size (`finalize_metrics`).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from distilface_jax.models import sentence_pipeline

Array = jax.Array

# torch.nn.CosineSimilarity's default: each norm is clamped below at 1e-8.
COSINE_EPS = 1e-8
IGNORE_INDEX = -100  # label of tokens the MLM loss ignores (torch / HF convention)


def l2_normalize(x: Array, eps: float = COSINE_EPS) -> Array:
    """x / max(||x||, eps) along the last axis, in float32: the pipeline's normalisation
    (`sentence_pipeline.l2_normalize`, finite gradient at 0) with torch's cosine eps."""
    return sentence_pipeline.l2_normalize(x, eps)


MASKED_LOGIT = -1e9  # a finite "minus infinity": exp underflows to 0 and 0 · (a − b) stays 0, never NaN


def cosine_matrix(a: Array, b: Array) -> Array:
    """[n,H] x [m,H] -> [n,m] cosine similarities, float32 with HIGHEST matmul precision."""
    return jnp.matmul(l2_normalize(a), l2_normalize(b).T, precision=jax.lax.Precision.HIGHEST)


def simcse_loss_local(
    z1: Array,
    z2: Array,
    z3: Array | None = None,
    *,
    anchor_offset: int | Array = 0,
    temperature: float = 0.05,
    hard_negative_weight: float = 0.0,
    extra_negatives: Array | None = None,
    extra_valid: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Sum of SimCSE losses of b local anchors against B global candidates.

    Args:
      z1: [b, H] this device's anchors (rows anchor_offset .. anchor_offset+b-1 of the batch).
      z2: [B, H] all positives of the global batch (the candidates); the positive of local
        row r is z2[anchor_offset + r].
      z3: optional [B, H] all hard negatives; local row r's own one is z3[anchor_offset + r].
      anchor_offset: first global row held here; may be traced (e.g. `axis_index * b`).
      temperature: τ. hard_negative_weight: w, added to logit [r, B + anchor_offset + r].
      extra_negatives: optional [Q, H] candidates every anchor sees as negatives only (a queue);
        extra_valid [Q] bool masks the slots not filled yet (their logit is MASKED_LOGIT).

    Returns:
      (loss_sum, sums): Σ_r ℓ_r as a float32 scalar, and a dict of *sums* (psum-able):
      `loss`, `correct`, `positive_cosine`, `negative_cosine` (z1 vs other rows of z2),
      `num_anchors`, `num_negatives`, and with z3 `hard_negative_cosine`. Turn them into
      means with `finalize_metrics`.
    """
    b, B = z1.shape[0], z2.shape[0]
    labels = anchor_offset + jnp.arange(b)  # [b] global column of each positive
    cos = cosine_matrix(z1, z2)  # [b, B]
    is_positive = jax.nn.one_hot(labels, B, dtype=jnp.bool_)  # [b, B]
    logits = cos / temperature  # [b, B]
    sums: dict[str, Array] = {}
    if z3 is not None:
        cos_hard = cosine_matrix(z1, z3)  # [b, B]
        # SimCSE adds w to the own-hard-negative logit only, column B + label in [b, 2B].
        own_hard = jax.nn.one_hot(labels, B, dtype=jnp.float32)  # [b, B]
        logits = jnp.concatenate([logits, cos_hard / temperature + hard_negative_weight * own_hard], axis=-1)  # [b, 2B]
        sums["hard_negative_cosine"] = jnp.sum(cos_hard * own_hard)
    if extra_negatives is not None:
        extra = cosine_matrix(z1, extra_negatives) / temperature  # [b, Q]
        logits = jnp.concatenate([logits, jnp.where(extra_valid[None, :], extra, MASKED_LOGIT)], axis=-1)
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # [b, B], [b, 2B] (+ Q)
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]  # [b]
    loss_sum = jnp.sum(nll)
    sums.update(
        loss=loss_sum,
        correct=jnp.sum(jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32),
        positive_cosine=jnp.sum(jnp.where(is_positive, cos, 0.0)),
        negative_cosine=jnp.sum(jnp.where(is_positive, 0.0, cos)),
        num_anchors=jnp.asarray(b, jnp.float32),
        num_negatives=jnp.asarray(b * (B - 1), jnp.float32),
    )
    return loss_sum, sums


def finalize_metrics(sums: dict[str, Array]) -> dict[str, Array]:
    """Turn (possibly psum-ed) sums from `simcse_loss_local` into means.

    Returns `loss`, `accuracy`, `positive_cosine`, `negative_cosine` (and
    `hard_negative_cosine` when present), each averaged over the right count.
    """
    n = sums["num_anchors"]
    metrics = {
        "loss": sums["loss"] / n,
        "accuracy": sums["correct"] / n,
        "positive_cosine": sums["positive_cosine"] / n,
        # B = 1 has no negatives; report 0 rather than NaN.
        "negative_cosine": sums["negative_cosine"] / jnp.maximum(sums["num_negatives"], 1.0),
    }
    if "hard_negative_cosine" in sums:
        metrics["hard_negative_cosine"] = sums["hard_negative_cosine"] / n
    return metrics


def simcse_loss(
    z1: Array,
    z2: Array,
    z3: Array | None = None,
    *,
    temperature: float = 0.05,
    hard_negative_weight: float = 0.0,
    extra_negatives: Array | None = None,
    extra_valid: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """SimCSE / InfoNCE loss of one whole batch (mean over the B anchors).

        ℓ_i = -log softmax_j([cos(z1_i, z2_j)/τ]_j ⧺ [cos(z1_i, z3_j)/τ + w·[j=i]]_j)[i]
        loss = (1/B) Σ_i ℓ_i

    Args:
      z1: [B, H] anchors (first dropout view, or sent0).
      z2: [B, H] positives (second dropout view, or sent1); row i is z1_i's positive and
        every other row is an in-batch negative.
      z3: optional [B, H] hard negatives (supervised SimCSE's `hard_neg`).
      temperature: τ (0.05 = sentence-transformers' scale 20).
      hard_negative_weight: w, a logit offset for each anchor's own hard negative.

    Any float dtype goes in; the cosines and the loss are computed in float32.
    Returns (loss, metrics) with metrics `loss`, `accuracy`, `positive_cosine`,
    `negative_cosine` (+ `hard_negative_cosine` with z3).
    """
    if z1.shape[0] != z2.shape[0] or (z3 is not None and z3.shape != z2.shape):
        raise ValueError(
            f"z1, z2 (and z3) need the same batch size: {z1.shape}, {z2.shape}, {None if z3 is None else z3.shape}"
        )
    _, sums = simcse_loss_local(
        z1,
        z2,
        z3,
        anchor_offset=0,
        temperature=temperature,
        hard_negative_weight=hard_negative_weight,
    )
    metrics = finalize_metrics(sums)
    return metrics["loss"], metrics


# ----------------------------------------------------------------------------- MLM


def mlm_loss_sums(logits: Array, labels: Array) -> dict[str, Array]:
    """Psum-able sums of the MLM cross-entropy: `loss_sum`, `correct`, `num_tokens`.

    logits [..., V] (any float dtype, cast to float32); labels [...] with IGNORE_INDEX
    where no prediction is asked.
    """
    logits = logits.astype(jnp.float32)
    is_labelled = labels != IGNORE_INDEX  # [...]
    safe_labels = jnp.where(is_labelled, labels, 0)  # gather needs a valid index everywhere
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # [..., V]
    nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]  # [...]
    correct = (jnp.argmax(logits, axis=-1) == labels) & is_labelled
    return {
        "loss_sum": jnp.sum(jnp.where(is_labelled, nll, 0.0)),
        "correct": jnp.sum(correct).astype(jnp.float32),
        "num_tokens": jnp.sum(is_labelled).astype(jnp.float32),
    }


def mlm_loss(logits: Array, labels: Array) -> tuple[Array, dict[str, Array]]:
    """Masked-language-model cross-entropy, mean over labelled tokens (torch's CE with
    ignore_index=-100).

    Args:
      logits: [N, L, V] vocabulary logits. labels: [N, L] target ids, -100 = ignored.
    Returns (loss, metrics) with `mlm_loss`, `mlm_accuracy`, `mlm_num_tokens`. A batch with
    no labelled token gives loss 0 (torch would give NaN; a NaN would poison the update).
    """
    sums = mlm_loss_sums(logits, labels)
    n = jnp.maximum(sums["num_tokens"], 1.0)
    loss = sums["loss_sum"] / n
    return loss, {
        "mlm_loss": loss,
        "mlm_accuracy": sums["correct"] / n,
        "mlm_num_tokens": sums["num_tokens"],
    }


def mask_tokens(
    key: Array,
    input_ids: Array,
    attention_mask: Array,
    *,
    special_token_ids: Sequence[int],
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
) -> tuple[Array, Array]:
    """BERT masking (Devlin et al., 2019; HF DataCollatorForLanguageModeling), jittable.

    Each non-special, non-padding token is selected with probability `mlm_probability`;
    a selected token becomes [MASK] with p 0.8, a uniformly random id with p 0.1, and stays
    itself with p 0.1. Any shape works (e.g. [N, L] or [N, K, L]).

    Returns (masked_ids, labels): labels hold the original id where selected, -100 elsewhere.
    Bind the keyword arguments with functools.partial before jitting.
    """
    k_select, k_mask, k_random, k_ids = jax.random.split(key, 4)
    specials = jnp.asarray(tuple(special_token_ids), dtype=input_ids.dtype)
    is_special = jnp.isin(input_ids, specials)
    eligible = (attention_mask != 0) & ~is_special
    selected = eligible & jax.random.bernoulli(k_select, mlm_probability, input_ids.shape)
    to_mask = selected & jax.random.bernoulli(k_mask, 0.8, input_ids.shape)
    # 0.5 of the remaining 20% -> 10% random; the other 10% keep their token.
    to_random = selected & ~to_mask & jax.random.bernoulli(k_random, 0.5, input_ids.shape)
    random_ids = jax.random.randint(k_ids, input_ids.shape, 0, vocab_size, dtype=input_ids.dtype)
    masked_ids = jnp.where(to_mask, jnp.asarray(mask_token_id, input_ids.dtype), input_ids)
    masked_ids = jnp.where(to_random, random_ids, masked_ids)
    labels = jnp.where(selected, input_ids, jnp.asarray(IGNORE_INDEX, input_ids.dtype))
    return masked_ids, labels
