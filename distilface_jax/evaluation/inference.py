"""Bucketed, jitted sentence embedding: the one path `encode`, `evaluate` and training eval share.

Sentences are tokenized without padding, sorted by length and padded only to the next bucket
(powers of two from 8 up to the model's limit); a batch's rows follow a token budget
(`inference_batches`). A whole STS suite therefore compiles at most ~7 shapes instead of one
per distinct length, short sentences don't pay for long ones, and a long line is padded with
few companions. The progress bar counts sentences whose embeddings have come back, not
batches dispatched.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distilface_jax.evaluation.inference_batches import DEFAULT_TOKENS_PER_ROW, bucket_lengths, plan_batches
from distilface_jax.models import sentence_pipeline
from distilface_jax.models.sentence_pipeline import PROJECTION, SentencePipeline

__all__ = ["PROJECTION", "make_embed_fn", "drain"]  # PROJECTION lives in models/sentence_pipeline.py

_HOST_FETCH_EVERY = 32  # batches kept in flight before waiting for the oldest one


@functools.lru_cache(maxsize=32)
def _compiled_embedder(pipeline: SentencePipeline, dtype_name: str, attention_impl: str):
    """One jitted function per pipeline (its tokenizer aside), reused across calls and training evals."""
    model = pipeline.module(jnp.dtype(dtype_name), attention_impl)

    @jax.jit
    def embed(params, input_ids, attention_mask):  # [B, L] → [B, D]
        rows = {"input_ids": input_ids, "attention_mask": attention_mask}
        return sentence_pipeline.embed(pipeline, params, rows, model=model)

    return embed


def make_embed_fn(
    pipeline: SentencePipeline,
    params,
    *,
    batch_size: int = 128,
    tokens_per_batch: Optional[int] = None,
    dtype=jnp.float32,
    attention_impl: str = "xla",
    progress: bool = False,
    devices: Optional[Sequence[jax.Device]] = None,
) -> Callable[[Sequence[str]], np.ndarray]:
    """Returns `embed(sentences) -> np.ndarray [N, D] float32`; row i embeds sentences[i] through
    every step of `pipeline` (its tokenizer, cut at `pipeline.token_limit()`).

    `tokens_per_batch` bounds rows x padded length of a batch (default
    `batch_size * DEFAULT_TOKENS_PER_ROW`); `batch_size` bounds its rows. `embed.compiled_shapes`
    records every (rows, length) shape it ran. `devices` (this process's, e.g.
    `jax.local_devices()`): each batch's rows are split over them, the params replicated (data
    parallel); default: the first device alone.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokens_per_batch = tokens_per_batch or batch_size * DEFAULT_TOKENS_PER_ROW
    if tokens_per_batch < 1:
        raise ValueError(f"tokens_per_batch must be >= 1, got {tokens_per_batch}")
    pipeline.check_params(params)
    config, tokenizer = pipeline.encoder, pipeline.tokenizer
    max_length = pipeline.token_limit()
    buckets = bucket_lengths(max_length)
    embed_batch = _compiled_embedder(pipeline, jnp.dtype(dtype).name, attention_impl)
    width = pipeline.width
    num_devices = len(devices) if devices else 1
    if num_devices > 1:
        mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
        rows_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
        params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    else:
        rows_sharding = None
        params = jax.device_put(params, devices[0] if devices else None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
    compiled_shapes: set[tuple[int, int]] = set()

    def embed(sentences: Sequence[str]) -> np.ndarray:
        sentences = list(sentences)
        if not sentences:
            return np.zeros((0, width), np.float32)
        token_ids = tokenizer(
            sentences,
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths = np.array([len(ids) for ids in token_ids])
        result = np.zeros((len(sentences), width), np.float32)
        pending: list[tuple[np.ndarray, jax.Array]] = []
        bar = _progress_bar(len(sentences)) if progress else None
        for indices, rows, length in plan_batches(
            lengths, buckets, batch_size=batch_size, tokens_per_batch=tokens_per_batch
        ):
            rows = -(-rows // num_devices) * num_devices  # Every device gets the same number of rows.
            input_ids = np.full((rows, length), pad_id, np.int32)
            attention_mask = np.zeros((rows, length), np.int32)
            attention_mask[:, 0] = 1  # Filler rows attend to one token, so no 0/0 in masked means.
            for row, index in enumerate(indices):
                ids = token_ids[index]
                input_ids[row, : len(ids)] = ids
                attention_mask[row, : len(ids)] = 1
            compiled_shapes.add((rows, length))
            if rows_sharding is not None:
                input_ids, attention_mask = jax.device_put((input_ids, attention_mask), rows_sharding)
            # Dispatch without waiting: the host tokenizes/pads the next batch while the device runs.
            pending.append((indices, embed_batch(params, input_ids, attention_mask)))
            # Collect what has finished (never waits), and wait only when too much is in flight.
            done = drain(pending, result, wait_for=len(pending) - _HOST_FETCH_EVERY)
            if bar is not None:
                bar.update(done)
        done = drain(pending, result, wait_for=len(pending))
        if bar is not None:
            bar.update(done)
            bar.close()
        return result

    embed.compiled_shapes = compiled_shapes
    embed.max_length = max_length
    embed.num_devices = num_devices
    return embed


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="embedding", unit=" sentences", unit_scale=True, dynamic_ncols=True, leave=False)


def drain(pending: list, result: np.ndarray, *, wait_for: int = 0) -> int:
    """Copies finished batches, oldest first, into `result`; returns how many sentences that was.

    The first `wait_for` batches are waited for; after them, a batch is taken only if its
    device result is already there (`is_ready`), so the caller never blocks needlessly and a
    progress bar fed by the return value counts sentences that are really done.
    """
    done = 0
    while pending and (wait_for > 0 or _is_ready(pending[0][1])):
        indices, embeddings = pending.pop(0)
        result[indices] = np.asarray(embeddings)[: len(indices)]
        done += len(indices)
        wait_for -= 1
    return done


def _is_ready(array) -> bool:
    is_ready = getattr(array, "is_ready", None)
    return bool(is_ready()) if is_ready is not None else True
