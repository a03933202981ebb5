"""A student cut from its teacher's layers against the independent reference: Hugging Face's
BertModel with the other layers removed (what sentence-transformers' layer-reduction recipe does)."""

from __future__ import annotations

import numpy as np
import pytest

from distilface_jax.distill.student import StudentError, cut_layers
from distilface_jax.evaluation.inference import make_embed_fn
from distilface_jax.interop import hf
from distilface_jax.models.sentence_pipeline import SentencePipeline

from helpers import SENTENCES


@pytest.mark.parametrize("layers", [[1], [0, 1]])
def test_cut_student_equals_pytorch_with_layers_removed(tiny_bert_dir, layers):
    import torch
    import transformers

    teacher = hf.load_pretrained(str(tiny_bert_dir))
    config, params = cut_layers(teacher.config, teacher.params, layers)
    assert config.num_layers == len(layers)
    ours = make_embed_fn(SentencePipeline(config, teacher.tokenizer, pooler="avg"), params)(SENTENCES)

    reference = transformers.BertModel.from_pretrained(str(tiny_bert_dir)).eval()
    reference.encoder.layer = torch.nn.ModuleList([reference.encoder.layer[i] for i in layers])
    reference.config.num_hidden_layers = len(layers)
    encoded = teacher.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**encoded).last_hidden_state
    mask = encoded["attention_mask"][..., None].float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_layer_list_errors_name_the_setting(tiny_bert_dir):
    teacher = hf.load_pretrained(str(tiny_bert_dir))
    for layers, message in (
        ([], "is empty"),
        ([0, 2], "layer 2 is out of range for the 2-layer teacher"),
        ([-1], "layer -1 is out of range"),
        ([1, 0], "strictly increasing"),
    ):
        with pytest.raises(StudentError, match=message):
            cut_layers(teacher.config, teacher.params, layers)
