"""`EncoderConfig`: the one shape description shared by the DistilBERT and BERT families.

It is derived from (and written back to) a Hugging Face `config.json`, so the same
dataclass drives the Flax module, the weight import table and the export.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

SUPPORTED_MODEL_TYPES = ("distilbert", "bert")

# Hugging Face spells the same activation several ways; all of these are the exact erf GELU.
_ERF_GELU_NAMES = ("gelu", "gelu_python")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Shapes and regularisation of a post-LayerNorm Transformer encoder.

    `model_type` decides the family differences: BERT has token-type embeddings and
    names its weights differently; DistilBERT has neither token types nor a pooler.
    """

    model_type: str = "distilbert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 0  # 0 for DistilBERT: no token-type embeddings.
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.model_type == "bert" and self.type_vocab_size < 1:
            raise ValueError("a BERT config needs type_vocab_size >= 1")
        if self.model_type == "distilbert" and self.type_vocab_size != 0:
            raise ValueError("DistilBERT has no token-type embeddings: type_vocab_size must be 0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> "EncoderConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any], source: str = "config.json") -> "EncoderConfig":
        """Builds the config from a Hugging Face `config.json` dict; `source` names it in errors."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"{source}: model_type {model_type!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
            )

        def need(key):
            if key not in hf:
                raise KeyError(f"{source}: missing key {key!r} for model_type {model_type!r}")
            return hf[key]

        if model_type == "distilbert":
            activation = hf.get("activation", "gelu")
            if activation not in _ERF_GELU_NAMES:
                raise ValueError(f"{source}: activation {activation!r} is not supported (only exact 'gelu')")
            return cls(
                model_type="distilbert",
                vocab_size=need("vocab_size"),
                hidden_size=need("dim"),
                num_layers=need("n_layers"),
                num_heads=need("n_heads"),
                intermediate_size=need("hidden_dim"),
                max_position_embeddings=need("max_position_embeddings"),
                type_vocab_size=0,
                layer_norm_eps=1e-12,  # Hard-coded in HF's DistilBERT, not in its config.
                hidden_dropout=float(hf.get("dropout", 0.1)),
                attention_dropout=float(hf.get("attention_dropout", 0.1)),
                pad_token_id=int(hf.get("pad_token_id") or 0),
                initializer_range=float(hf.get("initializer_range", 0.02)),
            )
        activation = hf.get("hidden_act", "gelu")
        if activation not in _ERF_GELU_NAMES:
            raise ValueError(f"{source}: hidden_act {activation!r} is not supported (only exact 'gelu')")
        position_type = hf.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"{source}: position_embedding_type {position_type!r} is not supported")
        return cls(
            model_type="bert",
            vocab_size=need("vocab_size"),
            hidden_size=need("hidden_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=need("num_attention_heads"),
            intermediate_size=need("intermediate_size"),
            max_position_embeddings=need("max_position_embeddings"),
            type_vocab_size=need("type_vocab_size"),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            hidden_dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            pad_token_id=int(hf.get("pad_token_id") or 0),
            initializer_range=float(hf.get("initializer_range", 0.02)),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` fields `transformers` needs to rebuild this model."""
        if self.model_type == "distilbert":
            return {
                "model_type": "distilbert",
                "architectures": ["DistilBertModel"],
                "vocab_size": self.vocab_size,
                "dim": self.hidden_size,
                "n_layers": self.num_layers,
                "n_heads": self.num_heads,
                "hidden_dim": self.intermediate_size,
                "max_position_embeddings": self.max_position_embeddings,
                "dropout": self.hidden_dropout,
                "attention_dropout": self.attention_dropout,
                "activation": "gelu",
                "pad_token_id": self.pad_token_id,
                "initializer_range": self.initializer_range,
                "sinusoidal_pos_embds": False,
            }
        return {
            "model_type": "bert",
            "architectures": ["BertModel"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout,
            "hidden_act": "gelu",
            "pad_token_id": self.pad_token_id,
            "initializer_range": self.initializer_range,
            "position_embedding_type": "absolute",
        }
