"""The ONNX graph (`export --format onnx`) against references it does not share code with: the
JAX model's token states and embeddings, numpy truncation and normalisation, onnxruntime's
int8 graph against float32, and sentence-transformers' ONNX backend and PyTorch pipeline loading
the exported folder."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from distilface_jax.interop import hf, onnx_export, onnx_graph
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.encoder import Encoder
from distilface_jax.models.sentence_model import SentenceEncoder, init_params

from helpers import SENTENCES

ort = pytest.importorskip("onnxruntime")

# Three layers, so that avg_first_last (layers 1 and 3) and avg_top2 (layers 2 and 3) differ.
BERT = EncoderConfig(
    model_type="bert",
    vocab_size=60,
    hidden_size=32,
    num_layers=3,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    type_vocab_size=2,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)
DISTILBERT = BERT.replace(model_type="distilbert", type_vocab_size=0)


def _params(config: EncoderConfig, seed: int = 0) -> dict:
    """Random params with weights N(0, 0.3²) (0.02 keeps a 32-wide model nearly linear, where a
    wrong non-linearity hides below 1e-5) and LayerNorm/biases moved off (1, 0)."""
    params = jax.device_get(init_params(config, jax.random.key(seed)))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda p: (rng.normal(0, 0.3, p.shape) if p.ndim == 2 else p + rng.normal(0, 0.1, p.shape)).astype(np.float32),
        params,
    )


def _tokens(seed: int, batch: int, length: int):
    """[B, L] int64 ids and a mask of mixed lengths (every row keeps [CLS] and >= 1 more token)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 60, (batch, length))
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    for row in range(batch):
        mask[row, rng.integers(2, length + 1) :] = 0
    return np.where(mask == 1, ids, 0).astype(np.int64), mask.astype(np.int64)


def _run(model, ids, mask, *, int8_path=None):
    session = ort.InferenceSession(
        str(int8_path) if int8_path else model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"input_ids": ids, "attention_mask": mask})


CASES = [  # (family, pooler, MLP head, width map, dim, normalize)
    ("bert", "cls", True, False, None, False),
    ("distilbert", "cls", True, False, None, True),
    ("bert", "cls_before_pooler", False, False, None, False),
    ("distilbert", "avg", False, True, None, True),  # a distilled student's kept width map 32 → 24
    ("bert", "avg", False, False, 12, True),  # Matryoshka: truncated, then re-normalised
    ("distilbert", "avg_first_last", False, False, 7, False),  # truncated only
    ("bert", "avg_top2", False, True, 10, True),
]


@pytest.mark.parametrize("family, pooler, mlp, width_map, dim, normalize", CASES)
def test_onnx_graph_equals_the_jax_model(family, pooler, mlp, width_map, dim, normalize):
    config = BERT if family == "bert" else DISTILBERT
    params = _params(config)
    rng = np.random.default_rng(1)
    projection = (
        {"kernel": rng.normal(0, 0.3, (32, 24)).astype(np.float32), "bias": rng.normal(0, 0.1, 24).astype(np.float32)}
        if width_map
        else None
    )
    head = onnx_graph.SentenceHead(pooler=pooler, apply_mlp=mlp, normalize=normalize, dim=dim)
    model = onnx_graph.build_model(config, params, head, projection=projection)
    # Two shapes through one graph: batch and sequence axes are dynamic.
    for seed, batch, length in [(0, 6, 17), (1, 1, 5)]:
        ids, mask = _tokens(seed, batch, length)
        last_hidden_state, embedding = _run(model, ids, mask)
        states = Encoder(config).apply({"params": params["encoder"]}, ids, mask)
        np.testing.assert_allclose(last_hidden_state, np.asarray(states.last_hidden_state), atol=1e-5, rtol=1e-5)
        expected = np.asarray(
            SentenceEncoder(config, pooler=pooler).apply({"params": params}, ids, mask, apply_mlp=mlp), np.float64
        )
        if projection is not None:
            expected = expected @ projection["kernel"] + projection["bias"]
        expected = expected[:, :dim] if dim else expected  # numpy, not the graph's Slice
        if normalize:
            expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
        assert embedding.shape == expected.shape
        np.testing.assert_allclose(embedding, expected, atol=1e-5, rtol=0)


def test_int8_graph_runs_stays_close_and_stores_int8_weights(tmp_path):
    import onnx

    params = _params(BERT)
    head = onnx_graph.SentenceHead(pooler="avg", normalize=True)
    fp32, int8 = onnx_export.write_onnx(tmp_path, BERT, params, head, quantize="int8")
    ids, mask = _tokens(0, 6, 17)
    full = _run(onnx.load(str(fp32)), ids, mask)[1]
    quantized = _run(None, ids, mask, int8_path=int8)[1]
    assert np.min(np.sum(full * quantized, axis=1)) >= 0.99  # unit vectors: the cosine
    initializers = {t.name: t.data_type for t in onnx.load(str(int8)).graph.initializer}
    eight_bit = [name for name, kind in initializers.items() if kind in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    assert any("word_embeddings" in name for name in eight_bit)  # the Gather's table
    assert sum("kernel" in n and n.endswith("_quantized") for n in eight_bit) == 6 * BERT.num_layers  # all MatMuls


def test_exported_folder_loads_in_sentence_transformers_onnx_backend(tiny_bert_dir, tmp_path):
    """`export --model FOLDER --format onnx --dim`: sentence-transformers' ONNX backend (its own
    pooling on `last_hidden_state`, truncate_dim) and its PyTorch pipeline give the graph's
    `sentence_embedding`."""
    from sentence_transformers import SentenceTransformer

    from distilface_jax import encode, export

    out = tmp_path / "onnx_model"
    assert export.main(["--model", str(tiny_bert_dir), "--out", str(out), "--format", "onnx", "--normalize"]) == 0
    assert (out / "onnx" / "model.onnx").exists() and not (out / "onnx" / "model_qint8_dynamic.onnx").exists()
    truncated = tmp_path / "truncated"
    assert export.main(["--model", str(out), "--out", str(truncated), "--format", "onnx", "--dim", "20"]) == 0
    tokenizer = hf.load_tokenizer(out)
    tokens = tokenizer(SENTENCES, padding=True, return_tensors="np")
    inputs = {name: tokens[name].astype(np.int64) for name in onnx_graph.INPUT_NAMES}
    for folder, width in [(out, 32), (truncated, 20)]:
        session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
        embedding = session.run([onnx_graph.SENTENCE_EMBEDDING], inputs)[0]
        backend = SentenceTransformer(str(folder), backend="onnx", device="cpu").encode(SENTENCES)
        pytorch = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
        assert embedding.shape == backend.shape == pytorch.shape == (len(SENTENCES), width)
        # sentence-transformers cuts its unit vectors (truncate_dim); the graph re-normalises the cut.
        for theirs in (backend, pytorch):
            np.testing.assert_allclose(embedding, theirs / np.linalg.norm(theirs, axis=1, keepdims=True), atol=1e-5)
        # `encode --model` reads the folder's truncate_dim and re-normalises the cut, as the graph does.
        (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
        encoded = tmp_path / f"{folder.name}.npy"
        assert encode.main(["--model", str(folder), "--input", str(tmp_path / "in.txt"), "--output", str(encoded)]) == 0
        np.testing.assert_allclose(np.load(encoded), embedding, atol=1e-5)


@pytest.mark.parametrize(
    "extra_args, message",
    [
        (["--quantize", "int8"], "--quantize int8 needs --format onnx"),
        (["--format", "onnx", "--dim", "33"], "--dim 33: the model's embeddings have 32 dimensions"),
        (["--format", "onnx"], 'pip install "distilface-jax[onnx]"'),  # onnx "not installed"
    ],
)
def test_export_errors_are_one_line(tiny_bert_dir, tmp_path, capsys, monkeypatch, extra_args, message):
    from distilface_jax import export

    if "pip install" in message:
        import importlib.util

        find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else find_spec(name, *a)
        )
    out = tmp_path / "out"
    assert export.main(["--model", str(tiny_bert_dir), "--out", str(out), *extra_args]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error, error
    assert not out.exists()


def test_encode_dim_larger_than_the_model_is_one_line(tiny_bert_dir, tmp_path, capsys):
    from distilface_jax import encode

    (tmp_path / "in.txt").write_text("a man plays guitar\n")
    args = ["--model", str(tiny_bert_dir), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "e.npy")]
    assert encode.main([*args, "--dim", "64"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: --dim 64: the model's embeddings have 32 dimensions"
