"""The SimCSE objective of one device's rows, inside `shard_map`: what the step and GradCache
both differentiate.

  - each device embeds its local examples (two dropout views, or sent0/sent1[/hard_neg]);
  - it keeps its anchors z1 local and all-gathers only the candidates z2 (and z3), so its
    logits are [b, B] (or [b, 2B]): memory O(local × global batch), not O(global²);
  - per-device sums of the per-anchor losses are psum-ed: the loss is exactly the loss of
    the global batch, every anchor seeing every device's candidates.
`global_loss` is that replicated scalar; its gradient is taken *outside* the shard_map
(`step.py`, `grad_cache.py`). Dropout and MLM masks are keyed per example (`keys.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from distilface_jax.models import sentence_pipeline
from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.training import losses, matryoshka
from distilface_jax.training.keys import example_keys
from distilface_jax.training.sharding import DATA_AXIS

_MLM_KEY_OFFSET = 1 << 20  # separates MLM masking keys from dropout keys of the same example


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """`config.loss`: the SimCSE loss and its optional MLM term."""

    temperature: float = 0.05
    hard_negative_weight: float = 0.0
    do_mlm: bool = False
    mlm_weight: float = 0.1
    mlm_probability: float = 0.15
    # Matryoshka (`matryoshka.py`): the loss summed over these leading dimensions; () = plain.
    matryoshka_dims: tuple[int, ...] = ()
    matryoshka_weights: tuple[float, ...] = ()  # () = all 1


@dataclasses.dataclass(frozen=True)
class MlmVocabulary:
    """What BERT masking needs from the tokenizer and model (for `do_mlm` only)."""

    size: int
    special_token_ids: tuple[int, ...] = ()  # never masked
    mask_token_id: int = 0

    @classmethod
    def of(cls, tokenizer, size: int) -> MlmVocabulary:
        ids: Sequence[int] = getattr(tokenizer, "all_special_ids", ())
        return cls(size, tuple(sorted(set(int(i) for i in ids))), tokenizer.mask_token_id or 0)


def views(batch: dict, num_views: int) -> dict:
    """[b, K, L] batch → [b, V, L]. Unsupervised (K = 1): the sentence twice, so the two
    views differ only by their dropout masks (SimCSE's "dropout as augmentation")."""
    if batch["input_ids"].shape[1] == num_views:
        return batch
    return {name: jnp.repeat(array, num_views, axis=1) for name, array in batch.items()}


def training_pipeline(model: SentenceEncoder) -> SentencePipeline:
    """What SimCSE trains: the pooler and the MLP head, applied in training even when it is
    train-only (`mlp_only_train`); no width map, no normalisation (the loss's cosine normalises)."""
    return SentencePipeline(model.config, pooler=model.pooler, apply_mlp=True)


def embed_rows(
    model: SentenceEncoder, params, rows: dict, keys: jax.Array, *, deterministic: bool, method: Optional[str] = None
) -> jax.Array:
    """[R, L] token rows with [R] dropout keys → [R, ...] outputs, each row with its own mask:
    the training pipeline's embeddings [R, H], or with `method="mlm_logits"` the MLM logits.

    vmap over rows gives each example its own dropout key; weights are not vmapped, so XLA
    still emits the same batched matmuls as an unvmapped call.
    """
    if method is None:
        return sentence_pipeline.embed(
            training_pipeline(model), params, rows, model=model, keys=keys, deterministic=deterministic
        )

    def one(row: dict, key):
        token_types = row.get("token_type_ids")
        return model.apply(
            {"params": params},
            row["input_ids"][None],
            row["attention_mask"][None],
            None if token_types is None else token_types[None],
            deterministic=deterministic,
            rngs=None if deterministic else {"dropout": key},
            method=getattr(SentenceEncoder, method),
        )[0]

    return jax.vmap(one)(rows, keys)


def _flatten(tree: dict) -> dict:
    return {name: array.reshape((-1,) + array.shape[2:]) for name, array in tree.items()}


def device_embeddings(
    model, params, local_batch: dict, step_key, first_index, num_views: int, deterministic: bool
) -> jax.Array:
    """[b, K, L] local batch → [b, V, H] float32 embeddings of every view."""
    batch = views(local_batch, num_views)
    count = batch["input_ids"].shape[0]
    keys = example_keys(step_key, first_index, count, num_views)  # [b, V]
    z = embed_rows(model, params, _flatten(batch), keys.reshape(-1), deterministic=deterministic)
    return z.reshape(count, num_views, -1)


def contrastive_sums(z_local: jax.Array, first_index, loss_config: LossConfig) -> list[dict]:
    """Psum-ed SimCSE sums for local anchors z_local[:, 0] vs all devices' candidates: one dict
    per Matryoshka dimension (one dict, the full width, without them)."""
    candidates = jax.lax.all_gather(z_local[:, 1:], DATA_AXIS, tiled=True)  # [B, V-1, H]
    hard_negatives = candidates[:, 1] if candidates.shape[1] > 1 else None
    dims, _ = matryoshka.resolve(loss_config.matryoshka_dims, loss_config.matryoshka_weights, z_local.shape[-1])
    per_dim = []
    for dim in dims:  # Each term is InfoNCE of the first `dim` coordinates (cosine re-normalises them).
        _, sums = losses.simcse_loss_local(
            matryoshka.truncate(z_local[:, 0], dim),
            matryoshka.truncate(candidates[:, 0], dim),
            matryoshka.truncate(hard_negatives, dim),
            anchor_offset=first_index,
            temperature=loss_config.temperature,
            hard_negative_weight=loss_config.hard_negative_weight,
        )
        per_dim.append(sums)
    return jax.lax.psum(per_dim, DATA_AXIS)


def mlm_inputs(
    local_batch: dict, step_key, first_index, num_views: int, loss_config: LossConfig, vocabulary: MlmVocabulary
) -> tuple[dict, jax.Array, jax.Array, jax.Array]:
    """The MLM copy of every view of examples first_index, first_index + 1, ... (BERT masking).

    Returns (rows, masked_ids, labels, keys): the [R, L] flattened views (R = b·V, example-major),
    their masked ids [R, L], labels [R, L] (the original id where a token was selected, else
    IGNORE_INDEX) and the [R] per-(example, view) keys that drew them. A pure function of
    (step key, global example index, view): the whole global batch with first_index 0, on one
    device, gets the very masks the sharded step draws.
    """
    rows = _flatten(views(local_batch, num_views))
    count = local_batch["input_ids"].shape[0]
    keys = example_keys(step_key, first_index + _MLM_KEY_OFFSET, count, num_views).reshape(-1)
    mask = functools.partial(
        losses.mask_tokens,
        special_token_ids=vocabulary.special_token_ids,
        mask_token_id=vocabulary.mask_token_id,
        vocab_size=vocabulary.size,
        mlm_probability=loss_config.mlm_probability,
    )
    masked_ids, labels = jax.vmap(mask)(keys, rows["input_ids"], rows["attention_mask"])
    return rows, masked_ids, labels, keys


def device_mlm_sums(
    model,
    params,
    local_batch: dict,
    step_key,
    first_index,
    num_views: int,
    loss_config: LossConfig,
    vocabulary: MlmVocabulary,
    deterministic: bool,
) -> dict:
    """SimCSE's auxiliary MLM: every view re-encoded with 15% of its tokens masked (sums, psum-ed)."""
    rows, masked_ids, labels, keys = mlm_inputs(local_batch, step_key, first_index, num_views, loss_config, vocabulary)
    dropout_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 1)
    logits = embed_rows(
        model, params, dict(rows, input_ids=masked_ids), dropout_keys, deterministic=deterministic, method="mlm_logits"
    )  # [R, L, V]
    return jax.lax.psum(losses.mlm_loss_sums(logits, labels), DATA_AXIS)


def combine(contrastive: list[dict], mlm: Optional[dict], loss_config: LossConfig) -> tuple[jax.Array, dict]:
    """(loss, metrics) from psum-ed sums. Accuracy and cosines are the first Matryoshka
    dimension's (the full width without them); the loss is the weighted sum over dimensions."""
    dims, weights = matryoshka.resolve(loss_config.matryoshka_dims, loss_config.matryoshka_weights)
    per_dim = [losses.finalize_metrics(sums) for sums in contrastive]
    metrics = dict(per_dim[0])
    term_losses = [m["loss"] for m in per_dim]
    loss = matryoshka.weighted_total(term_losses, weights)
    metrics.update(matryoshka.term_metrics(dims, term_losses), loss=loss)
    if mlm is not None:
        mlm_loss = mlm["loss_sum"] / jnp.maximum(mlm["num_tokens"], 1.0)
        metrics.update(
            contrastive_loss=loss, mlm_loss=mlm_loss, mlm_accuracy=mlm["correct"] / jnp.maximum(mlm["num_tokens"], 1.0)
        )
        loss = loss + loss_config.mlm_weight * mlm_loss
        metrics["loss"] = loss
    return loss, metrics


def global_loss(
    params,
    batch: dict,
    step_key,
    *,
    model: SentenceEncoder,
    mesh: Mesh,
    num_views: int,
    loss_config: LossConfig,
    deterministic: bool,
    mlm_vocabulary: Optional[MlmVocabulary] = None,
) -> tuple[jax.Array, dict]:
    """The loss of the global batch (replicated scalar) and its metrics."""
    if loss_config.do_mlm and mlm_vocabulary is None:
        raise ValueError("loss_config.do_mlm needs the tokenizer's MlmVocabulary")

    def per_device(params, local_batch, step_key):
        count = local_batch["input_ids"].shape[0]
        first_index = jax.lax.axis_index(DATA_AXIS) * count
        z = device_embeddings(model, params, local_batch, step_key, first_index, num_views, deterministic)
        mlm = None
        if loss_config.do_mlm:
            mlm = device_mlm_sums(
                model, params, local_batch, step_key, first_index, num_views, loss_config, mlm_vocabulary, deterministic
            )
        return combine(contrastive_sums(z, first_index, loss_config), mlm, loss_config)

    return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()), out_specs=(P(), P()))(
        params, batch, step_key
    )
