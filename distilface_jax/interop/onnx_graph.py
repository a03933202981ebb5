"""The ONNX graph of a sentence encoder, written op by op from our parameter tree.

    inputs   input_ids [B, L] int64, attention_mask [B, L] int64       (B and L dynamic)
    outputs  last_hidden_state [B, L, H] float32                       (what sentence-transformers'
                                                                        ONNX backend reads)
             sentence_embedding [B, D] float32: pooling → [MLP head] → [width map] → [:dim]
                                                → [L2 normalise]        (the final embedding)

Why written here rather than traced (docs/edge.md has the comparison): the graph is the encoder
of `models/encoder.py` spelled in ONNX ops, one block per Flax module, reading the same parameter
tree (one table for BERT and DistilBERT, as `interop/hf_names.py`), so the only dependency is
`onnx`, no tracer decides the shapes (batch and length are dynamic by construction), every
pooler and head of the JAX model is expressible, and nothing depends on the transformers or
torch version that happens to be installed. The price is a second spelling of the encoder's
math: tests/interop/test_onnx_export.py holds it to the JAX model (every pooler, head, width map,
dimension; max |diff| ≤ 1e-5) and to sentence-transformers' PyTorch pipeline.

Ops are chosen so that onnxruntime's graph optimiser and dynamic quantiser recognise them:
LayerNormalization (opset 17), GELU as x·0.5·(1 + erf(x/√2)) (fused into one Gelu kernel),
MatMul with constant weights (quantised to int8), Gather of the word embeddings (int8 too).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.pooling import POOLERS

OPSET = 17  # LayerNormalization is a standard op from 17 on; onnxruntime >= 1.14 runs it.
INPUT_NAMES = ("input_ids", "attention_mask")
LAST_HIDDEN_STATE = "last_hidden_state"
SENTENCE_EMBEDDING = "sentence_embedding"
_NORM_EPS = 1e-12  # sentence-transformers' Normalize (torch.nn.functional.normalize) and our encode


@dataclasses.dataclass(frozen=True)
class SentenceHead:
    """What turns token states into the sentence embedding, in this order."""

    pooler: str = "avg"  # one of models.pooling.POOLERS
    apply_mlp: bool = False  # SimCSE's MLP head (cls pooler only): tanh(W x + b)
    normalize: bool = False  # L2-normalise the (truncated) embedding
    dim: Optional[int] = None  # Matryoshka: keep the first `dim` coordinates (None: all)


class _Graph:
    """Accumulates nodes and initialisers with unique names."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, value, hint: str = "const", dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: Optional[str] = None, output: Optional[str] = None, **attrs):
        from onnx import helper

        output = output or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.name(op_type), **attrs))
        return output


def _linear(g: _Graph, x: str, dense: dict, hint: str) -> str:
    """x W + b, W [in, out] (Flax's layout)."""
    kernel = g.constant(dense["kernel"], f"{hint}.kernel")
    return g.op("Add", [g.op("MatMul", [x, kernel]), g.constant(dense["bias"], f"{hint}.bias")], hint)


def _layer_norm(g: _Graph, x: str, norm: dict, eps: float, hint: str) -> str:
    scale, bias = g.constant(norm["scale"], f"{hint}.scale"), g.constant(norm["bias"], f"{hint}.bias")
    return g.op("LayerNormalization", [x, scale, bias], hint, axis=-1, epsilon=eps)


def _gelu(g: _Graph, x: str) -> str:
    """Exact (erf) GELU, in the form onnxruntime fuses: x · 0.5 · (1 + erf(x / √2))."""
    erf = g.op("Erf", [g.op("Div", [x, g.constant(math.sqrt(2.0))])])
    return g.op("Mul", [g.op("Mul", [x, g.op("Add", [erf, g.constant(1.0)])]), g.constant(0.5)], "gelu")


def _embeddings(g: _Graph, config: EncoderConfig, params: dict, input_ids: str) -> str:
    """LN(word[input_ids] + position[:L] (+ token_type[0])) → [B, L, H]; token types are all 0,
    as `encode` runs the model (and BERT's tokenizer gives a single sentence)."""
    tables = params["embeddings"]
    word = g.op("Gather", [g.constant(tables["word_embeddings"]["embedding"], "word_embeddings"), input_ids], "word")
    length = g.op("Shape", [input_ids], "length", start=1, end=2)  # [1]: L
    zero = g.constant([0], dtype=np.int64)
    positions = g.op(
        "Slice", [g.constant(tables["position_embeddings"]["embedding"], "position_embeddings"), zero, length, zero]
    )  # [L, H]
    x = g.op("Add", [word, positions])
    if config.type_vocab_size:
        x = g.op("Add", [x, g.constant(tables["token_type_embeddings"]["embedding"][0], "token_type_0")])
    return _layer_norm(g, x, tables["layer_norm"], config.layer_norm_eps, "embeddings.layer_norm")


def _attention(g: _Graph, config: EncoderConfig, params: dict, x: str, key_is_real: str, hint: str) -> str:
    """Softmax(q kᵀ/√d, padded keys masked) v, heads merged, output projection. x [B, L, H]."""
    heads = g.constant([0, 0, config.num_heads, config.head_dim], dtype=np.int64)  # 0: copy B, L

    def split(name: str, perm: list[int]) -> str:  # [B, L, H] → [B, N, L, d] (or [B, N, d, L])
        return g.op("Transpose", [g.op("Reshape", [_linear(g, x, params[name], f"{hint}.{name}"), heads])], perm=perm)

    query, key, value = split("query", [0, 2, 1, 3]), split("key", [0, 2, 3, 1]), split("value", [0, 2, 1, 3])
    scores = g.op("Div", [g.op("MatMul", [query, key]), g.constant(math.sqrt(config.head_dim))])  # [B, N, L, L]
    scores = g.op("Where", [key_is_real, scores, g.constant(np.finfo(np.float32).min)])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), value])  # [B, N, L, d]
    merged = g.op(
        "Reshape",
        [g.op("Transpose", [context], perm=[0, 2, 1, 3]), g.constant([0, 0, config.hidden_size], dtype=np.int64)],
    )
    return _linear(g, merged, params["output"], f"{hint}.output")


def _layer(g: _Graph, config: EncoderConfig, params: dict, x: str, key_is_real: str, hint: str) -> str:
    """Post-LN block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
    attended = _attention(g, config, params["attention"], x, key_is_real, f"{hint}.attention")
    x = _layer_norm(g, g.op("Add", [x, attended]), params["attention_layer_norm"], config.layer_norm_eps, hint)
    hidden = _gelu(g, _linear(g, x, params["ffn_in"], f"{hint}.ffn_in"))
    hidden = _linear(g, hidden, params["ffn_out"], f"{hint}.ffn_out")
    return _layer_norm(g, g.op("Add", [x, hidden]), params["output_layer_norm"], config.layer_norm_eps, hint)


def _masked_mean(g: _Graph, x: str, mask: str) -> str:
    """Σ_l x·m / Σ_l m over real tokens: [B, L, H], [B, L, 1] → [B, H]."""
    axis = g.constant([1], dtype=np.int64)
    total = g.op("ReduceSum", [g.op("Mul", [x, mask]), axis], keepdims=0)
    return g.op("Div", [total, g.op("ReduceSum", [mask, axis], keepdims=0)], "mean")


def _pool(g: _Graph, pooler: str, hidden_states: list[str], mask: str) -> str:
    """models.pooling.pool in ONNX ops: [B, H]."""
    if pooler in ("cls", "cls_before_pooler"):
        return g.op("Gather", [hidden_states[-1], g.constant(0, dtype=np.int64)], "cls", axis=1)
    if pooler == "avg":
        return _masked_mean(g, hidden_states[-1], mask)
    # hidden_states[0] is the embeddings' output; SimCSE's "first" is the first layer's output.
    first, second = (hidden_states[1], hidden_states[-1]) if pooler == "avg_first_last" else hidden_states[-2:]
    both = g.op("Div", [g.op("Add", [first, second]), g.constant(2.0)])
    return _masked_mean(g, both, mask)


def build_model(
    config: EncoderConfig,
    params: dict,
    head: SentenceHead,
    *,
    projection: Optional[dict] = None,
    producer: str = "distilface_jax",
):
    """The `onnx.ModelProto` of `params` (our SentenceEncoder tree; `projection` a distilled
    student's kept width map {"kernel" [D_s, D_t], "bias" [D_t]}) under `head`."""
    from onnx import TensorProto, helper

    if head.pooler not in POOLERS:
        raise ValueError(f"unknown pooler {head.pooler!r}; expected one of {POOLERS}")
    width = int(np.shape(projection["kernel"])[1]) if projection is not None else config.hidden_size
    if head.dim is not None and not 1 <= head.dim <= width:
        raise ValueError(f"--dim {head.dim}: the model's embeddings have {width} dimensions (1..{width})")
    g = _Graph()
    input_ids, attention_mask = INPUT_NAMES
    mask_float = g.op("Cast", [attention_mask], "mask", to=TensorProto.FLOAT)
    key_is_real = g.op(
        "Cast", [g.op("Unsqueeze", [attention_mask, g.constant([1, 2], dtype=np.int64)])], to=TensorProto.BOOL
    )  # [B, 1, 1, L]
    x = _embeddings(g, config, params["encoder"], input_ids)
    hidden_states = [x]
    for index in range(config.num_layers):
        x = _layer(g, config, params["encoder"][f"layer_{index}"], x, key_is_real, f"layer_{index}")
        hidden_states.append(x)
    g.nodes.append(helper.make_node("Identity", [x], [LAST_HIDDEN_STATE], name="last_hidden_state"))
    mask = g.op("Unsqueeze", [mask_float, g.constant([-1], dtype=np.int64)])  # [B, L, 1]
    embedding = _pool(g, head.pooler, hidden_states, mask)
    if head.pooler == "cls" and head.apply_mlp:
        embedding = g.op("Tanh", [_linear(g, embedding, params["mlp"]["dense"], "mlp.dense")], "mlp")
    if projection is not None:
        embedding = _linear(g, embedding, projection, "projection")
    if head.dim is not None and head.dim < width:
        embedding = g.op(
            "Slice",
            [embedding, g.constant([0], dtype=np.int64), g.constant([head.dim], dtype=np.int64)]
            + [g.constant([1], dtype=np.int64)],
            "truncated",
        )
    if head.normalize:  # After truncation: the first `dim` coordinates are re-normalised.
        norm = g.op("ReduceL2", [embedding], "norm", axes=[-1], keepdims=1)
        embedding = g.op("Div", [embedding, g.op("Max", [norm, g.constant(_NORM_EPS)])])
    g.nodes.append(helper.make_node("Identity", [embedding], [SENTENCE_EMBEDDING], name="sentence_embedding"))
    dim = head.dim or width
    graph = helper.make_graph(
        g.nodes,
        "sentence_encoder",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in INPUT_NAMES],
        [
            helper.make_tensor_value_info(
                LAST_HIDDEN_STATE, TensorProto.FLOAT, ["batch", "sequence", config.hidden_size]
            ),
            helper.make_tensor_value_info(SENTENCE_EMBEDDING, TensorProto.FLOAT, ["batch", dim]),
        ],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
    model.ir_version = 8  # onnxruntime >= 1.14 reads IR 8 (opset 17)
    return model
