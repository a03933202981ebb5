"""The Flax encoder against Hugging Face PyTorch: hidden states, poolers, MLM head, import errors."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from distilface_jax.interop import hf
from distilface_jax.models.encoder import Encoder
from distilface_jax.models.pooling import POOLERS
from distilface_jax.models.sentence_model import SentenceEncoder

from helpers import SENTENCES, save_tiny_hf_model

MINILM_ATOL = 1e-5  # measured: at most 2.3e-6 (hidden states up to |10|)


def padded_batch(tokenizer):
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    assert batch["attention_mask"].min() == 0, "the batch must contain padding"
    return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)


def torch_outputs(model_dir, input_ids, attention_mask):
    model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(input_ids, dtype=torch.long),
            attention_mask=torch.tensor(attention_mask, dtype=torch.long),
            output_hidden_states=True,
        )


def test_hidden_states_match_pytorch(tiny_model_dir):
    loaded = hf.load_pretrained(str(tiny_model_dir))
    input_ids, attention_mask = padded_batch(loaded.tokenizer)
    ours = Encoder(loaded.config).apply({"params": loaded.params["encoder"]}, input_ids, attention_mask)
    theirs = torch_outputs(tiny_model_dir, input_ids, attention_mask)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == loaded.config.num_layers + 1
    real = attention_mask.astype(bool)  # HF leaves garbage-but-finite values at padded queries too.
    for mine, reference in zip(ours.hidden_states, theirs.hidden_states):
        np.testing.assert_allclose(np.asarray(mine)[real], reference.numpy()[real], atol=1e-5, rtol=0)


def test_hidden_states_match_pytorch_in_the_nonlinear_range(scaled_bert_dir, scaled_distilbert_dir):
    """Weights N(0, 0.3²): GELU, softmax and the pooler's tanh work far from their linear range
    (checked on the PyTorch side), and every hidden state still agrees element-wise to 1e-5.
    (The tiny models above, with BERT's small init, keep LayerNorm inputs at a small variance,
    where the LayerNorm ε shows; these make an approximate GELU or softmax show.)"""
    for folder in (scaled_bert_dir, scaled_distilbert_dir):
        loaded = hf.load_pretrained(str(folder))
        input_ids, attention_mask = padded_batch(loaded.tokenizer)
        ours = Encoder(loaded.config).apply({"params": loaded.params["encoder"]}, input_ids, attention_mask)
        model = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
        gelu_inputs = []
        ffn = [
            layer.intermediate.dense if hasattr(layer, "intermediate") else layer.ffn.lin1
            for layer in (model.encoder.layer if hasattr(model, "encoder") else model.transformer.layer)
        ]
        hooks = [
            module.register_forward_hook(lambda m, i, o, sink=gelu_inputs: sink.append(o.detach().numpy()))
            for module in ffn
        ]
        with torch.no_grad():
            theirs = model(
                input_ids=torch.tensor(input_ids, dtype=torch.long),
                attention_mask=torch.tensor(attention_mask, dtype=torch.long),
                output_hidden_states=True,
                output_attentions=True,
            )
        for hook in hooks:
            hook.remove()
        real = attention_mask.astype(bool)
        # The regime: GELU inputs spread over [-3, 3] and beyond, attention far from uniform.
        assert np.mean([np.mean(np.abs(x[real]) > 1.0) for x in gelu_inputs]) > 0.3
        assert max(float(a.max()) for a in theirs.attentions) > 0.9
        for index, (mine, reference) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
            np.testing.assert_allclose(
                np.asarray(mine)[real],
                reference.numpy()[real],
                atol=1e-5,
                rtol=0,
                err_msg=f"{folder.name} hidden state {index}",
            )
        if loaded.config.model_type == "bert":  # The pooler's tanh, also past its linear range.
            pooled = SentenceEncoder(loaded.config, pooler="cls").apply(
                {"params": loaded.params}, input_ids, attention_mask
            )
            assert np.mean(np.abs(theirs.pooler_output.numpy()) > 0.76) > 0.3  # |pre-activation| > 1
            np.testing.assert_allclose(np.asarray(pooled), theirs.pooler_output.numpy(), atol=1e-5, rtol=0)


def test_real_minilm_hidden_states_match_pytorch_element_wise(minilm_dir):
    """all-MiniLM-L6-v2 (a real BERT): every one of its 7 hidden states, element-wise."""
    loaded = hf.load_pretrained(str(minilm_dir))
    batch = loaded.tokenizer(
        SENTENCES + ["A quick brown fox jumps over the lazy dog near the riverbank."], padding=True, return_tensors="np"
    )
    input_ids, attention_mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    ours = Encoder(loaded.config).apply({"params": loaded.params["encoder"]}, input_ids, attention_mask)
    theirs = torch_outputs(minilm_dir, input_ids, attention_mask)
    real = attention_mask.astype(bool)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 7
    for index, (mine, reference) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
        reference = reference.numpy()[real]
        np.testing.assert_allclose(
            np.asarray(mine)[real], reference, atol=MINILM_ATOL, rtol=0, err_msg=f"hidden state {index}"
        )


def reference_pool(pooler, theirs, attention_mask, mlp):
    """SimCSE's Pooler + MLPLayer, written in numpy over the PyTorch hidden states."""
    hidden = [h.numpy().astype(np.float64) for h in theirs.hidden_states]
    mask = attention_mask[..., None].astype(np.float64)
    mean = lambda h: (h * mask).sum(1) / mask.sum(1)
    if pooler == "cls":
        return np.tanh(hidden[-1][:, 0] @ np.asarray(mlp["kernel"], np.float64) + np.asarray(mlp["bias"]))
    return {
        "cls_before_pooler": lambda: hidden[-1][:, 0],
        "avg": lambda: mean(hidden[-1]),
        "avg_first_last": lambda: mean((hidden[1] + hidden[-1]) / 2),
        "avg_top2": lambda: mean((hidden[-2] + hidden[-1]) / 2),
    }[pooler]()


@pytest.mark.parametrize("pooler", POOLERS)
def test_poolers_match_reference(tiny_model_dir, pooler):
    loaded = hf.load_pretrained(str(tiny_model_dir))
    input_ids, attention_mask = padded_batch(loaded.tokenizer)
    ours = SentenceEncoder(loaded.config, pooler=pooler).apply({"params": loaded.params}, input_ids, attention_mask)
    theirs = torch_outputs(tiny_model_dir, input_ids, attention_mask)
    expected = reference_pool(pooler, theirs, attention_mask, loaded.params["mlp"]["dense"])
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5, rtol=0)


def test_bert_pooler_is_the_mlp_head(tiny_bert_dir):
    """SimCSE's 'cls' pooler on a BERT checkpoint is HF's pooler_output."""
    loaded = hf.load_pretrained(str(tiny_bert_dir))
    assert loaded.found_mlp
    input_ids, attention_mask = padded_batch(loaded.tokenizer)
    ours = SentenceEncoder(loaded.config, pooler="cls").apply({"params": loaded.params}, input_ids, attention_mask)
    theirs = torch_outputs(tiny_bert_dir, input_ids, attention_mask)
    np.testing.assert_allclose(np.asarray(ours), theirs.pooler_output.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
def test_mlm_head_and_prefixed_checkpoint_match_pytorch(tmp_path, model_type):
    folder = save_tiny_hf_model(tmp_path / model_type, model_type, head="mlm")
    assert any(name.startswith(f"{model_type}.") for name in _tensor_names(folder))
    loaded = hf.load_pretrained(str(folder), with_mlm_head=True)
    input_ids, attention_mask = padded_batch(loaded.tokenizer)
    model = SentenceEncoder(loaded.config, with_mlm_head=True)
    ours = model.apply({"params": loaded.params}, input_ids, attention_mask, method=SentenceEncoder.mlm_logits)
    reference = (
        transformers.AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
        if model_type == "distilbert"
        else transformers.BertForPreTraining.from_pretrained(str(folder)).eval()
    )
    with torch.no_grad():
        output = reference(
            input_ids=torch.tensor(input_ids, dtype=torch.long),
            attention_mask=torch.tensor(attention_mask, dtype=torch.long),
        )
    logits = output.logits if model_type == "distilbert" else output.prediction_logits
    real = attention_mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[real], logits.numpy()[real], atol=2e-5, rtol=0)


def test_bfloat16_compute_keeps_float32_params_and_stays_close(tiny_distilbert_dir):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    input_ids, attention_mask = padded_batch(loaded.tokenizer)
    full = SentenceEncoder(loaded.config, pooler="avg").apply({"params": loaded.params}, input_ids, attention_mask)
    half = SentenceEncoder(loaded.config, pooler="avg", dtype=jnp.bfloat16).apply(
        {"params": loaded.params}, input_ids, attention_mask
    )
    assert half.dtype == jnp.float32  # Poolers return float32 whatever the compute dtype.
    cosine = np.sum(np.asarray(full) * np.asarray(half), -1) / (
        np.linalg.norm(full, axis=-1) * np.linalg.norm(half, axis=-1)
    )
    assert cosine.min() > 0.99


def test_dropout_needs_rng_and_changes_outputs(tiny_distilbert_dir):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    input_ids, attention_mask = padded_batch(loaded.tokenizer)
    model = SentenceEncoder(loaded.config, pooler="avg")
    apply = lambda key: model.apply(
        {"params": loaded.params}, input_ids, attention_mask, deterministic=False, rngs={"dropout": key}
    )
    first, again, other = apply(jax.random.key(1)), apply(jax.random.key(1)), apply(jax.random.key(2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    no_dropout = SentenceEncoder(loaded.config.replace(hidden_dropout=0.0, attention_dropout=0.0), pooler="avg")
    np.testing.assert_allclose(
        no_dropout.apply(
            {"params": loaded.params},
            input_ids,
            attention_mask,
            deterministic=False,
            rngs={"dropout": jax.random.key(1)},
        ),
        model.apply({"params": loaded.params}, input_ids, attention_mask),
        atol=1e-6,
    )


def _tensor_names(folder):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="np") as handle:
        return list(handle.keys())


def _rewrite_tensors(folder, edit):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _copy(source, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(source, target)
    return target


def test_missing_tensor_is_named(tiny_distilbert_dir, tmp_path):
    folder = _copy(tiny_distilbert_dir, tmp_path)
    _rewrite_tensors(folder, lambda t: t.pop("transformer.layer.1.ffn.lin2.weight"))
    with pytest.raises(hf.ModelLoadError, match=r"missing tensor 'transformer\.layer\.1\.ffn\.lin2\.weight'"):
        hf.load_pretrained(str(folder))


def test_wrong_shape_is_named(tiny_bert_dir, tmp_path):
    folder = _copy(tiny_bert_dir, tmp_path)
    _rewrite_tensors(
        folder, lambda t: t.__setitem__("encoder.layer.0.attention.self.query.weight", np.zeros((32, 16), np.float32))
    )
    with pytest.raises(hf.ModelLoadError, match=r"'encoder\.layer\.0\.attention\.self\.query\.weight' has shape"):
        hf.load_pretrained(str(folder))


def test_unexpected_tensor_is_named(tiny_distilbert_dir, tmp_path):
    folder = _copy(tiny_distilbert_dir, tmp_path)
    _rewrite_tensors(folder, lambda t: t.__setitem__("classifier.weight", np.zeros((2, 32), np.float32)))
    with pytest.raises(hf.ModelLoadError, match="unexpected tensors.*classifier.weight"):
        hf.load_pretrained(str(folder))


def test_unknown_model_type_is_named(tiny_distilbert_dir, tmp_path):
    folder = _copy(tiny_distilbert_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "roberta"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hf.ModelLoadError, match="model_type 'roberta' is not supported"):
        hf.load_pretrained(str(folder))


def test_missing_config_key_is_named(tiny_bert_dir, tmp_path):
    folder = _copy(tiny_bert_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["num_hidden_layers"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hf.ModelLoadError, match="missing key 'num_hidden_layers'"):
        hf.load_pretrained(str(folder))


def test_not_a_model_folder(tmp_path):
    with pytest.raises(hf.ModelLoadError, match="config.json: missing"):
        hf.load_pretrained(str(tmp_path))
    with pytest.raises(hf.ModelLoadError, match="nope: no such folder"):  # not "not a model folder"
        hf.load_pretrained(str(tmp_path / "nope"))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(hf.ModelLoadError, match="a_file: is a file, not a model folder"):
        hf.load_pretrained(str(tmp_path / "a_file"))


def test_pytorch_bin_checkpoint_loads_with_weights_only(tiny_bert_dir, tmp_path):
    folder = _copy(tiny_bert_dir, tmp_path)
    model = transformers.AutoModel.from_pretrained(str(folder))
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    from_bin = hf.load_pretrained(str(folder))
    reference = hf.load_pretrained(str(tiny_bert_dir))
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_bin.params["encoder"], reference.params["encoder"])


def test_tf_era_layer_norm_names_and_prefixes_load(tiny_bert_dir, tmp_path):
    """The hub's bert-base-uncased still names LayerNorm parameters gamma/beta, under `bert.`."""
    folder = _copy(tiny_bert_dir, tmp_path)

    def rename(tensors):
        for name in list(tensors):
            new = "bert." + name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
                "LayerNorm.bias", "LayerNorm.beta"
            )
            tensors[new] = tensors.pop(name)

    _rewrite_tensors(folder, rename)
    assert any(name.endswith("LayerNorm.gamma") for name in _tensor_names(folder))
    reference = hf.load_pretrained(str(tiny_bert_dir))
    renamed = hf.load_pretrained(str(folder))
    jax.tree_util.tree_map(np.testing.assert_array_equal, renamed.params, reference.params)


def test_hub_ids_go_through_snapshot_download(tiny_distilbert_dir, monkeypatch):
    """A hub id is fetched with huggingface_hub (weights, configs, tokenizer only), then read as
    a local folder; offline, the failure names the id."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, tuple(allow_patterns)))
        return str(tiny_distilbert_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = hf.load_pretrained("someone/tiny-distilbert")
    assert calls and calls[0][0] == "someone/tiny-distilbert" and "*.safetensors" in calls[0][1]
    assert not any(pattern.endswith((".bin", ".py")) for pattern in calls[0][1])  # never code, never pickles
    reference = hf.load_pretrained(str(tiny_distilbert_dir))
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params["encoder"], reference.params["encoder"])

    def offline(repo_id, allow_patterns):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(hf.ModelLoadError, match="someone/tiny-distilbert: no such local folder"):
        hf.load_pretrained("someone/tiny-distilbert")


def test_fused_attention_path_equals_the_explicit_one(tiny_bert_dir):
    """`attention_impl="dot_product_attention"` (cuDNN flash attention on GPUs) is the same math."""
    loaded = hf.load_pretrained(str(tiny_bert_dir))
    input_ids, attention_mask = padded_batch(loaded.tokenizer)
    explicit = Encoder(loaded.config).apply({"params": loaded.params["encoder"]}, input_ids, attention_mask)
    fused = Encoder(loaded.config, attention_impl="dot_product_attention").apply(
        {"params": loaded.params["encoder"]}, input_ids, attention_mask
    )
    real = attention_mask.astype(bool)
    np.testing.assert_allclose(
        np.asarray(fused.last_hidden_state)[real], np.asarray(explicit.last_hidden_state)[real], atol=1e-5, rtol=0
    )
