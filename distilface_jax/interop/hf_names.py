"""The declared table between Hugging Face tensor names and our parameter tree.

Every row is (our path, HF name, transform). `linear` rows transpose: torch's `nn.Linear.weight`
is [out, in], Flax's `Dense.kernel` is [in, out]. Import and export both read this one table,
so a name can't be right in one direction and wrong in the other.
"""

from __future__ import annotations

from typing import NamedTuple

from distilface_jax.models.config import EncoderConfig

COPY = "copy"
LINEAR = "linear"


class Row(NamedTuple):
    path: tuple[str, ...]  # our parameter path, e.g. ("encoder", "layer_0", "ffn_in", "kernel")
    hf_name: str  # HF state-dict name without the family prefix
    transform: str  # COPY or LINEAR


def _linear(path: tuple[str, ...], hf_module: str) -> list[Row]:
    return [Row(path + ("kernel",), f"{hf_module}.weight", LINEAR), Row(path + ("bias",), f"{hf_module}.bias", COPY)]


def _layer_norm(path: tuple[str, ...], hf_module: str) -> list[Row]:
    return [Row(path + ("scale",), f"{hf_module}.weight", COPY), Row(path + ("bias",), f"{hf_module}.bias", COPY)]


# Per family: where each of our layer sub-modules lives in HF's layer `i`.
_LAYER_NAMES = {
    "distilbert": {
        "prefix": "transformer.layer.{i}",
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "output": "attention.out_lin",
        "attention_layer_norm": "sa_layer_norm",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
        "output_layer_norm": "output_layer_norm",
    },
    "bert": {
        "prefix": "encoder.layer.{i}",
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "output": "attention.output.dense",
        "attention_layer_norm": "attention.output.LayerNorm",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "output_layer_norm": "output.LayerNorm",
    },
}

FAMILY_PREFIX = {"distilbert": "distilbert.", "bert": "bert."}


def encoder_rows(config: EncoderConfig) -> list[Row]:
    """Rows of the base model (what `AutoModel` holds), without any head."""
    names = _LAYER_NAMES[config.model_type]
    rows = [
        Row(("encoder", "embeddings", "word_embeddings", "embedding"), "embeddings.word_embeddings.weight", COPY),
        Row(
            ("encoder", "embeddings", "position_embeddings", "embedding"), "embeddings.position_embeddings.weight", COPY
        ),
    ]
    if config.type_vocab_size:
        rows.append(
            Row(
                ("encoder", "embeddings", "token_type_embeddings", "embedding"),
                "embeddings.token_type_embeddings.weight",
                COPY,
            )
        )
    rows += _layer_norm(("encoder", "embeddings", "layer_norm"), "embeddings.LayerNorm")
    for i in range(config.num_layers):
        hf_layer = names["prefix"].format(i=i)
        ours = ("encoder", f"layer_{i}")
        for part in ("query", "key", "value", "output"):
            rows += _linear(ours + ("attention", part), f"{hf_layer}.{names[part]}")
        rows += _layer_norm(ours + ("attention_layer_norm",), f"{hf_layer}.{names['attention_layer_norm']}")
        rows += _linear(ours + ("ffn_in",), f"{hf_layer}.{names['ffn_in']}")
        rows += _linear(ours + ("ffn_out",), f"{hf_layer}.{names['ffn_out']}")
        rows += _layer_norm(ours + ("output_layer_norm",), f"{hf_layer}.{names['output_layer_norm']}")
    return rows


def bert_pooler_rows() -> list[Row]:
    """BERT's pooler (CLS → Linear → tanh) is exactly SimCSE's MLP head."""
    return _linear(("mlp", "dense"), "pooler.dense")


def mlm_head_rows(config: EncoderConfig) -> list[Row]:
    """MLM head, HF names at the top level of a *ForMaskedLM / *ForPreTraining checkpoint
    (without the decoder matrix: see `mlm_decoder_row`)."""
    if config.model_type == "distilbert":
        return (
            _linear(("mlm_head", "transform"), "vocab_transform")
            + _layer_norm(("mlm_head", "layer_norm"), "vocab_layer_norm")
            + [Row(("mlm_head", "bias"), "vocab_projector.bias", COPY)]
        )
    return (
        _linear(("mlm_head", "transform"), "cls.predictions.transform.dense")
        + _layer_norm(("mlm_head", "layer_norm"), "cls.predictions.transform.LayerNorm")
        + [Row(("mlm_head", "bias"), "cls.predictions.bias", COPY)]
    )


def mlm_decoder_row(config: EncoderConfig) -> Row:
    """The MLM decoder matrix [V, H] (torch) ⇄ our untied `mlm_head/decoder` [H, V]. HF ties it
    to the word embeddings, so a saved checkpoint often leaves it out (the importer then starts
    it from the word embeddings, the value the tied checkpoint means)."""
    name = "vocab_projector.weight" if config.model_type == "distilbert" else "cls.predictions.decoder.weight"
    return Row(("mlm_head", "decoder"), name, LINEAR)


def known_unused(config: EncoderConfig) -> tuple[str, ...]:
    """HF tensors that are deliberately not imported, as name prefixes/suffixes, with the reason."""
    return (
        "position_ids",  # A buffer, not a parameter (old checkpoints saved it).
        "cls.seq_relationship.",  # BERT's next-sentence head: no use in sentence embedding.
        "cls.predictions.decoder.",  # The decoder matrix is `mlm_decoder_row`; its bias a copy of cls.predictions.bias.
        "vocab_projector.weight",  # DistilBERT's decoder: `mlm_decoder_row` when an MLM head is asked for.
    )
