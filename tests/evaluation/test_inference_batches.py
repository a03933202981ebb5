"""Token-budget batches: bounded rows x length, few shapes, and the same embeddings as PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from distilface_jax.evaluation.inference import drain, make_embed_fn
from distilface_jax.evaluation.inference_batches import bucket_lengths, plan_batches
from distilface_jax.interop import hf
from distilface_jax.models.sentence_pipeline import SentencePipeline

from helpers import WORDS


def test_plan_keeps_rows_times_length_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(3, 30, size=500), [427, 300, 200]])
    buckets = bucket_lengths(512)
    plan = plan_batches(lengths, buckets, batch_size=128, tokens_per_batch=128 * 32)
    covered = np.concatenate([indices for indices, _, _ in plan])
    assert sorted(covered.tolist()) == list(range(len(lengths)))  # every sentence exactly once
    for indices, rows, length in plan:
        assert len(indices) <= rows and rows * length <= 128 * 32 and lengths[indices].max() <= length
    # The long lines are padded to 512 with few companions, not with a batch of 128 short ones.
    assert plan[0][1:] == (8, 512) and plan[0][0].tolist()[:1] == [500]
    assert len({(rows, length) for _, rows, length in plan}) <= len(buckets)
    # Short sentences still get whole batches.
    assert max(rows for _, rows, _ in plan) == 128


def test_long_line_among_short_ones_matches_pytorch(tiny_distilbert_dir):
    import torch
    import transformers

    rng = np.random.default_rng(1)
    sentences = [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))) for _ in range(40)]
    sentences.insert(17, " ".join(rng.choice(WORDS, size=60)))  # ~62 tokens: the 64 bucket
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    embed = make_embed_fn(
        SentencePipeline(loaded.config, loaded.tokenizer), loaded.params, batch_size=16, tokens_per_batch=128
    )
    ours = embed(sentences)
    assert (2, 64) in embed.compiled_shapes and all(r * n <= 128 for r, n in embed.compiled_shapes)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_distilbert_dir))
    model = transformers.AutoModel.from_pretrained(str(tiny_distilbert_dir)).eval()
    with torch.no_grad():  # One sentence at a time: no padding at all in the reference.
        reference = np.stack(
            [model(**tokenizer([s], return_tensors="pt")).last_hidden_state[0].mean(0).numpy() for s in sentences]
        )
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


class _Pending:
    def __init__(self, value, ready):
        self.value, self.ready = np.asarray(value, np.float32), ready

    def is_ready(self):
        return self.ready

    def __array__(self, dtype=None, copy=None):
        return self.value


def test_progress_counts_finished_batches_only():
    result = np.zeros((5, 1), np.float32)
    first, second = _Pending([[1.0], [2.0], [0.0]], True), _Pending([[3.0], [4.0], [5.0]], False)
    pending = [(np.array([0, 1]), first), (np.array([2, 3, 4]), second)]
    assert drain(pending, result) == 2  # the unfinished batch is neither waited for nor counted
    assert len(pending) == 1 and result[:, 0].tolist() == [1, 2, 0, 0, 0]
    assert drain(pending, result) == 0
    assert drain(pending, result, wait_for=1) == 3 and not pending  # waited for: counted once done
    assert result[:, 0].tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("budget", [0, -1])
def test_bad_budget_is_refused(tiny_distilbert_dir, budget):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    if budget == 0:  # 0 means the default
        make_embed_fn(SentencePipeline(loaded.config, loaded.tokenizer), loaded.params, tokens_per_batch=budget)
    else:
        with pytest.raises(ValueError, match="tokens_per_batch"):
            make_embed_fn(SentencePipeline(loaded.config, loaded.tokenizer), loaded.params, tokens_per_batch=budget)
