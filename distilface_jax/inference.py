"""Bucketed, jitted sentence embedding: the one path `encode`, `evaluate` and training eval share.

Sentences are tokenized without padding, sorted by length and padded only to the next bucket
(powers of two from 8 up to the model's limit), in batches of a fixed number of rows. A whole
STS suite therefore compiles at most ~7 shapes instead of one per distinct length, and short
sentences don't pay for long ones.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import SentenceEncoder

MIN_BUCKET = 8
_HOST_FETCH_EVERY = 32  # batches kept in flight before copying results to host memory


def bucket_lengths(max_length: int) -> list[int]:
    """[8, 16, 32, ..., max_length]: powers of two below the limit, then the limit itself."""
    buckets, length = [], MIN_BUCKET
    while length < max_length:
        buckets.append(length)
        length *= 2
    return buckets + [max_length]


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    for bucket in buckets:
        if length <= bucket:
            return bucket
    raise ValueError(f"length {length} is above the largest bucket {buckets[-1]}")


@functools.lru_cache(maxsize=32)
def _compiled_embedder(config: EncoderConfig, pooler: str, dtype_name: str, attention_impl: str,
                       apply_mlp: bool, normalize: bool):
    """One jitted function per model shape and pooler, reused across calls (and training evals)."""
    model = SentenceEncoder(config, pooler=pooler, dtype=jnp.dtype(dtype_name), attention_impl=attention_impl)

    @jax.jit
    def embed(params, input_ids, attention_mask):  # [B, L] → [B, H]
        embeddings = model.apply({"params": params}, input_ids, attention_mask,
                                 deterministic=True, apply_mlp=apply_mlp)
        if normalize:
            embeddings = embeddings / jnp.maximum(jnp.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        return embeddings

    return embed


def model_max_length(config: EncoderConfig, tokenizer) -> int:
    """The model's own limit: its position table, or the tokenizer's if that is smaller."""
    limit = config.max_position_embeddings
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < limit:
        limit = tokenizer_limit
    return limit


def make_embed_fn(config: EncoderConfig, params, tokenizer, *, pooler: str = "avg", batch_size: int = 128,
                  max_length: Optional[int] = None, dtype=jnp.float32, normalize: bool = False,
                  progress: bool = False, attention_impl: str = "xla",
                  apply_mlp: bool = True) -> Callable[[Sequence[str]], np.ndarray]:
    """Returns `embed(sentences) -> np.ndarray [N, H] float32`; row i embeds sentences[i].

    `max_length` truncates (default: the model's own limit, so nothing is cut short that the
    model could read). `embed.compiled_shapes` records every (rows, length) shape it ran.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = model_max_length(config, tokenizer)
    max_length = min(max_length or limit, limit)
    buckets = bucket_lengths(max_length)
    embed_batch = _compiled_embedder(config, pooler, jnp.dtype(dtype).name, attention_impl, apply_mlp, normalize)
    params = jax.device_put(params)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
    compiled_shapes: set[tuple[int, int]] = set()

    def embed(sentences: Sequence[str]) -> np.ndarray:
        sentences = list(sentences)
        if not sentences:
            return np.zeros((0, config.hidden_size), np.float32)
        token_ids = tokenizer(sentences, truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        lengths = np.array([len(ids) for ids in token_ids])
        order = np.argsort(-lengths, kind="stable")  # Longest first: a memory problem shows at once.
        rows = min(batch_size, max(MIN_BUCKET, 1 << (len(sentences) - 1).bit_length()))
        result = np.zeros((len(sentences), config.hidden_size), np.float32)
        pending: list[tuple[np.ndarray, jax.Array]] = []
        starts = range(0, len(sentences), rows)
        if progress and len(starts) > 1:
            from tqdm import tqdm
            starts = tqdm(starts, desc="encode", unit="batch")
        for start in starts:
            indices = order[start:start + rows]
            length = bucket_for(int(lengths[indices].max()), buckets)
            input_ids = np.full((rows, length), pad_id, np.int32)
            attention_mask = np.zeros((rows, length), np.int32)
            attention_mask[:, 0] = 1  # Filler rows attend to one token, so no 0/0 in masked means.
            for row, index in enumerate(indices):
                ids = token_ids[index]
                input_ids[row, :len(ids)] = ids
                attention_mask[row, :len(ids)] = 1
            compiled_shapes.add((rows, length))
            # Dispatch without waiting: the host tokenizes/pads the next batch while the device runs.
            pending.append((indices, embed_batch(params, input_ids, attention_mask)))
            if len(pending) >= _HOST_FETCH_EVERY:
                _drain(pending, result)
        _drain(pending, result)
        return result

    embed.compiled_shapes = compiled_shapes
    embed.max_length = max_length
    return embed


def _drain(pending: list, result: np.ndarray) -> None:
    for indices, embeddings in pending:
        result[indices] = np.asarray(embeddings)[:len(indices)]
    pending.clear()
