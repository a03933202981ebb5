"""The sentence pipeline's steps after pooling, against HF PyTorch and numpy: the width map, a
Matryoshka truncation re-normalised, and the checks that keep a pipeline and its params together."""

from __future__ import annotations

import numpy as np
import pytest

from distilface_jax.evaluation.inference import make_embed_fn
from distilface_jax.interop import hf
from distilface_jax.models.sentence_pipeline import PROJECTION, SentencePipeline

from helpers import SENTENCES


def torch_mean_pooled(model_dir) -> np.ndarray:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    return (hidden * mask).sum(1) / mask.sum(1)  # [N, 32]


def test_width_map_then_truncation_then_normalisation_match_numpy(tiny_distilbert_dir):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    rng = np.random.default_rng(0)
    width_map = {
        "kernel": rng.normal(0, 0.3, (32, 24)).astype(np.float32),
        "bias": rng.normal(0, 0.1, 24).astype(np.float32),
    }
    params = {**loaded.params, PROJECTION: width_map}
    pipeline = SentencePipeline(loaded.config, loaded.tokenizer, width_map=24, output_dim=10, normalize=True)
    ours = make_embed_fn(pipeline, params)(SENTENCES)
    reference = (torch_mean_pooled(tiny_distilbert_dir) @ width_map["kernel"] + width_map["bias"])[:, :10]
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)  # re-normalised after the cut
    assert ours.shape == (len(SENTENCES), 10) and pipeline.width == 10
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    # Without a width map in the pipeline, params that carry one (a training head) are not applied.
    plain = make_embed_fn(SentencePipeline(loaded.config, loaded.tokenizer), params)(SENTENCES)
    np.testing.assert_allclose(plain, torch_mean_pooled(tiny_distilbert_dir), atol=1e-5)


def test_a_pipeline_refuses_what_it_cannot_compute(tiny_distilbert_dir):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    with pytest.raises(ValueError, match="output_dim 33 must be between 1 and the embedding width 32"):
        SentencePipeline(loaded.config, output_dim=33)
    with pytest.raises(ValueError, match="unknown pooler"):
        SentencePipeline(loaded.config, pooler="max")
    with pytest.raises(ValueError, match="no 'projection' subtree"):
        make_embed_fn(SentencePipeline(loaded.config, loaded.tokenizer, width_map=24), loaded.params)
    wrong = {**loaded.params, PROJECTION: {"kernel": np.zeros((32, 16), np.float32), "bias": np.zeros(16, np.float32)}}
    with pytest.raises(ValueError, match=r"shape \(32, 16\)"):
        make_embed_fn(SentencePipeline(loaded.config, loaded.tokenizer, width_map=24), wrong)
