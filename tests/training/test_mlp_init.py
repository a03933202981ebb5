"""`config.model.mlp_init`: SimCSE's fresh MLP head ("random", every recipe's default) or the
checkpoint's pooler ("pretrained"), checked against the checkpoint file itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from distilface_jax.training import initial_model, resume

from helpers import ROOT


def recipe(name: str, model_dir, **model_settings):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.name_or_path = str(model_dir)
    for key, value in model_settings.items():
        config.model[key] = value
    return config


def checkpoint_pooler(model_dir) -> tuple[np.ndarray, np.ndarray]:
    """BERT's pooler as the file holds it (torch layout [out, in]), read without project code."""
    from safetensors.numpy import load_file

    tensors = load_file(str(Path(model_dir) / "model.safetensors"))
    return tensors["pooler.dense.weight"], tensors["pooler.dense.bias"]


@pytest.mark.parametrize("name", ["unsup_bert", "sup_bert", "unsup_distilbert", "sup_distilbert"])
def test_every_recipe_starts_the_head_as_simcse(name, tmp_path):
    assert recipe(name, tmp_path).model.mlp_init == "random"


def test_random_head_is_fresh_seeded_and_ignores_the_pooler(scaled_bert_dir, tmp_path):
    """SimCSE's BertForCL: BertModel(add_pooling_layer=False) + MLPLayer under HF's _init_weights:
    weight N(0, initializer_range²), bias 0. The encoder itself still comes from the checkpoint."""
    model = initial_model.initial_model(recipe("sup_bert", scaled_bert_dir), str(tmp_path))
    kernel, bias = model.params["mlp"]["dense"]["kernel"], model.params["mlp"]["dense"]["bias"]
    pooler_weight, pooler_bias = checkpoint_pooler(scaled_bert_dir)
    assert model.checkpoint_has_mlp  # There was a pooler to ignore.
    size = kernel.size  # 32 x 32: std within ~5 standard errors, mean within ~5 of its own
    assert abs(kernel.std() - 0.02) < 5 * 0.02 / np.sqrt(2 * size) and abs(kernel.mean()) < 5 * 0.02 / np.sqrt(size)
    assert np.all(bias == 0.0)
    assert abs(np.corrcoef(kernel.ravel(), pooler_weight.T.ravel())[0, 1]) < 0.2  # not the pooler
    assert not np.allclose(bias, pooler_bias)
    from safetensors.numpy import load_file

    word = load_file(str(scaled_bert_dir / "model.safetensors"))["embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(model.params["encoder"]["embeddings"]["word_embeddings"]["embedding"], word)
    again = initial_model.initial_model(recipe("sup_bert", scaled_bert_dir), str(tmp_path))
    np.testing.assert_array_equal(again.params["mlp"]["dense"]["kernel"], kernel)  # seeded
    other_seed = recipe("sup_bert", scaled_bert_dir)
    other_seed.seed = 1
    other = initial_model.initial_model(other_seed, str(tmp_path)).params["mlp"]["dense"]["kernel"]
    assert abs(np.corrcoef(other.ravel(), kernel.ravel())[0, 1]) < 0.2


def test_pretrained_head_is_the_checkpoint_pooler(scaled_bert_dir, tmp_path):
    model = initial_model.initial_model(recipe("sup_bert", scaled_bert_dir, mlp_init="pretrained"), str(tmp_path))
    pooler_weight, pooler_bias = checkpoint_pooler(scaled_bert_dir)
    np.testing.assert_array_equal(model.params["mlp"]["dense"]["kernel"], pooler_weight.T)
    np.testing.assert_array_equal(model.params["mlp"]["dense"]["bias"], pooler_bias)


def test_pretrained_head_without_one_in_the_checkpoint_is_an_error(tiny_distilbert_dir, tmp_path):
    with pytest.raises(ValueError, match="mlp_init='pretrained', but .* has no MLP head"):
        initial_model.initial_model(
            recipe("unsup_distilbert", tiny_distilbert_dir, mlp_init="pretrained"), str(tmp_path)
        )
    with pytest.raises(ValueError, match="mlp_init must be one of"):
        initial_model.initial_model(recipe("unsup_distilbert", tiny_distilbert_dir, mlp_init="pooler"), str(tmp_path))


def test_resume_refuses_another_head_and_reads_old_configs_as_their_code_ran(tmp_path):
    current = recipe("unsup_bert", tmp_path).to_dict()
    encoder = {"model_type": "bert"}
    changed = dict(current, model=dict(current["model"], mlp_init="pretrained"))
    refused = "model.mlp_init: checkpoint has 'pretrained', config has 'random'"
    with pytest.raises(resume.ConfigMismatchError, match=refused):
        resume.check_resumable(changed, current, encoder, encoder, "ckpt")
    # A config saved before the key existed: that code kept a checkpoint's pooler when it had one.
    old = dict(
        current,
        model={k: v for k, v in current["model"].items() if k != "mlp_init"},
        loss={k: v for k, v in current["loss"].items() if k != "mlm_tie_decoder"},
    )
    assert resume.with_legacy_keys(old, current, checkpoint_has_mlp=True)["model"]["mlp_init"] == "pretrained"
    with pytest.raises(resume.ConfigMismatchError, match="model.mlp_init"):
        resume.check_resumable(resume.with_legacy_keys(old, current, True), current, encoder, encoder, "ckpt")
    resume.check_resumable(resume.with_legacy_keys(old, current, False), current, encoder, encoder, "ckpt")
    # Without the MLM loss the decoder's tying is moot; with it, old runs had it tied.
    assert resume.with_legacy_keys(old, current, False)["loss"]["mlm_tie_decoder"] is False
    old_mlm = dict(old, loss=dict(old["loss"], do_mlm=True))
    assert resume.with_legacy_keys(old_mlm, current, False)["loss"]["mlm_tie_decoder"] is True


def test_encode_of_a_simcse_checkpoint_keeps_its_pooler(scaled_bert_dir):
    """`encode`/`evaluate --model` read a released SimCSE BERT's pooler as its head, whatever
    the training default is."""
    from distilface_jax.interop import hf

    loaded = hf.load_pretrained(str(scaled_bert_dir))
    pooler_weight, _ = checkpoint_pooler(scaled_bert_dir)
    assert loaded.found_mlp
    np.testing.assert_array_equal(loaded.params["mlp"]["dense"]["kernel"], pooler_weight.T)
