"""Export to HF + sentence-transformers folders, checked by loading them with those libraries."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import transformers

from distilface_jax.evaluation.inference import make_embed_fn
from distilface_jax.interop import hf
from distilface_jax.models.sentence_pipeline import SentencePipeline

from helpers import SENTENCES


def _assert_same_tree(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("pooler", ["cls", "avg", "cls_before_pooler"])
def test_round_trip_and_third_party_loaders(tiny_model_dir, tmp_path, pooler):
    loaded = hf.load_pretrained(str(tiny_model_dir))
    pipeline = SentencePipeline(loaded.config, loaded.tokenizer, pooler=pooler, apply_mlp=True)
    out = hf.save_pretrained(tmp_path / "export", pipeline, loaded.params)
    again = hf.load_pretrained(str(out))
    mlp_survives = pooler == "cls" or loaded.config.model_type == "bert"
    _assert_same_tree(again.params["encoder"], loaded.params["encoder"])
    if mlp_survives:
        _assert_same_tree(again.params["mlp"], loaded.params["mlp"])

    # transformers: no missing or unexpected keys.
    model, info = transformers.AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info.get("mismatched_keys")

    # sentence-transformers gives the Flax embeddings.
    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(str(out), device="cpu")
    theirs = st_model.encode(SENTENCES, convert_to_numpy=True, batch_size=4)
    ours = make_embed_fn(pipeline, loaded.params)(SENTENCES)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)

    # transformers' own outputs give them too (mean pooling or CLS [+ MLP]) .
    batch = loaded.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        # Token types are all 0 here; DistilBertModel (transformers 4.x) refuses the argument.
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    if pooler == "avg":
        expected = (hidden * mask).sum(1) / mask.sum(1)
    else:
        expected = hidden[:, 0]
        if pooler == "cls":
            dense = loaded.params["mlp"]["dense"]
            expected = np.tanh(expected @ dense["kernel"] + dense["bias"])
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_export_without_mlp_and_with_normalize(tiny_distilbert_dir, tmp_path):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    pipeline = SentencePipeline(loaded.config, loaded.tokenizer, pooler="cls", apply_mlp=False, normalize=True)
    out = hf.save_pretrained(tmp_path / "export", pipeline, loaded.params)
    assert not (out / "2_Dense").exists()
    from sentence_transformers import SentenceTransformer

    theirs = SentenceTransformer(str(out), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    ours = make_embed_fn(pipeline, loaded.params)(SENTENCES)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-6)


def test_export_refuses_non_empty_folder_and_leaves_nothing_half_written(tiny_distilbert_dir, tmp_path):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        hf.save_pretrained(occupied, SentencePipeline(loaded.config, loaded.tokenizer, pooler="cls"), loaded.params)
    assert (occupied / "keep.txt").read_text() == "user data"
    with pytest.raises(ValueError, match="avg_top2.*cannot be expressed"):
        hf.save_pretrained(
            tmp_path / "fresh", SentencePipeline(loaded.config, loaded.tokenizer, pooler="avg_top2"), loaded.params
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]  # No staging folder left behind.


def test_real_minilm_matches_sentence_transformers(minilm_dir):
    """all-MiniLM-L6-v2: our avg-pooled embeddings vs SentenceTransformer, cosine ≥ 0.99999 each."""
    from sentence_transformers import SentenceTransformer

    words = "the a cat dog sat on mat quick brown fox jumps over lazy music plays loud soft city river".split()
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(120)]
    sentences += ["Hello, world!", "A man is playing a guitar.", "Ünïcödé and émojis 🙂 survive tokenization."]
    loaded = hf.load_pretrained(str(minilm_dir))
    ours = make_embed_fn(SentencePipeline(loaded.config, loaded.tokenizer), loaded.params, batch_size=32)(sentences)
    theirs = SentenceTransformer(str(minilm_dir), device="cpu").encode(sentences, convert_to_numpy=True)
    cosine = np.sum(ours * theirs, -1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1))
    assert cosine.min() >= 0.99999, cosine.min()
