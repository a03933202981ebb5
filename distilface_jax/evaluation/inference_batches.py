"""How inference cuts sentences into batches: length buckets and a token budget (pure, no jax).

Sentences are sorted by length (longest first) and padded to the next bucket length (powers
of two from 8 up to the model's limit). A batch's number of rows follows its bucket: rows x
bucket length stays within a token budget (`tokens_per_batch`), capped at `batch_size` rows,
and rounded down to a power of two. So one 427-token line among short sentences is padded to
512 with a handful of companions, not with a whole batch of them, and every bucket still runs
one (rows, length) shape: a whole STS suite compiles at most len(buckets) shapes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_BUCKET = 8
# Default budget per allowed row: batch_size rows of up to 64 tokens (what almost every STS or
# wiki sentence is) keep the full batch; longer buckets get proportionally fewer rows.
DEFAULT_TOKENS_PER_ROW = 64


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


def _floor_power_of_two(value: int) -> int:
    return 1 << (max(int(value), 1).bit_length() - 1)


def rows_for(length: int, *, batch_size: int, tokens_per_batch: int, num_sentences: int) -> int:
    """Rows of a batch padded to `length`: within the token budget, at most `batch_size`, and
    no more than the next power of two >= num_sentences (a 6-sentence call pads to 8 rows, not 128)."""
    budget_rows = _floor_power_of_two(tokens_per_batch // length) if tokens_per_batch >= length else 1
    small_input_rows = max(MIN_BUCKET, 1 << (max(num_sentences, 1) - 1).bit_length())
    return max(1, min(batch_size, budget_rows, small_input_rows))


def plan_batches(
    lengths: np.ndarray, buckets: Sequence[int], *, batch_size: int, tokens_per_batch: int
) -> list[tuple[np.ndarray, int, int]]:
    """[(sentence indices, rows, padded length)] covering every sentence once, longest first.

    `lengths` [N] are token counts. Each batch takes as many of the next-longest sentences as
    its bucket's row count allows; len(indices) <= rows (the last batch of a bucket may have
    filler rows).
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")  # Longest first: a memory problem shows at once.
    batches, start = [], 0
    while start < len(order):
        length = bucket_for(int(lengths[order[start]]), buckets)
        rows = rows_for(length, batch_size=batch_size, tokens_per_batch=tokens_per_batch, num_sentences=len(order))
        indices = order[start : start + rows]
        batches.append((indices, rows, length))
        start += len(indices)
    return batches
