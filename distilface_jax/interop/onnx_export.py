"""ONNX files inside an exported sentence-transformers folder (`export --format onnx`).

    OUT/onnx/model.onnx                  float32 graph (`onnx_graph.build_model`)
    OUT/onnx/model_qint8_dynamic.onnx    with `--quantize int8`: onnxruntime dynamic quantisation

Where sentence-transformers' ONNX backend looks (`SentenceTransformer(OUT, backend="onnx")`
loads `onnx/model.onnx`; `model_kwargs={"file_name": "onnx/model_qint8_dynamic.onnx"}` the int8
one). Its backend reads `last_hidden_state` and applies the folder's own modules; an application
with onnxruntime alone reads `sentence_embedding`, which already holds them.

int8 (`quantize_int8`): onnxruntime's dynamic quantisation, weights int8 (symmetric), activations
uint8 quantised per batch at run time: every MatMul with a constant weight (MatMulInteger) and
the word-embedding Gather (its table stored as int8, a quarter of the float32 file).
LayerNorm, softmax, GELU, pooling and normalisation stay float32. `per_channel` gives each
output column of a weight its own scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

ONNX_FOLDER = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_qint8_dynamic.onnx"
QUANTIZATIONS = ("int8",)
EXTRA = "onnx"  # pip install "distilface-jax[onnx]" (pyproject.toml)


class MissingDependency(ImportError):
    """An optional package that `export --format onnx` needs; the message names the pip extra."""


def require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependency(
            f'export --format onnx needs the package {module!r}: pip install "distilface-jax[{EXTRA}]" '
            "(or pip install -r requirements-test.txt)"
        )


def write_pipeline(
    folder: Path, pipeline, params: dict, *, quantize: Optional[str] = None, per_channel: bool = True
) -> list[Path]:
    """`write_onnx` of a `SentencePipeline` (the one description of text → embedding): its
    pooler, applied MLP head, width map (`params["projection"]`), output_dim and normalisation
    become the graph's head; its truncation stays with the tokenizer, outside the graph."""
    from distilface_jax.interop.onnx_graph import SentenceHead
    from distilface_jax.models.sentence_pipeline import PROJECTION

    pipeline.check_params(params)
    head = SentenceHead(
        pooler=pipeline.pooler, apply_mlp=pipeline.uses_mlp, normalize=pipeline.normalize, dim=pipeline.output_dim
    )
    projection = params[PROJECTION] if pipeline.width_map is not None else None
    return write_onnx(
        folder, pipeline.encoder, params, head, projection=projection, quantize=quantize, per_channel=per_channel
    )


def write_onnx(
    folder: Path,
    config,
    params: dict,
    head,
    *,
    projection: Optional[dict] = None,
    quantize: Optional[str] = None,
    per_channel: bool = True,
) -> list[Path]:
    """Writes folder/onnx/model.onnx (and the int8 file); returns the paths written."""
    require("onnx")
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"--quantize {quantize}: expected one of {QUANTIZATIONS}")
        require("onnxruntime")
    import onnx

    from distilface_jax.interop import onnx_graph

    model = onnx_graph.build_model(config, params, head, projection=projection)
    onnx.checker.check_model(model, full_check=True)  # Shapes and types inferred: a broken graph fails here.
    (folder / ONNX_FOLDER).mkdir(parents=True, exist_ok=True)
    fp32 = folder / ONNX_FOLDER / FP32_FILE
    onnx.save_model(model, str(fp32))
    written = [fp32]
    if quantize == "int8":
        written.append(quantize_int8(fp32, folder / ONNX_FOLDER / INT8_FILE, per_channel=per_channel))
    return written


def quantize_int8(source: Path, target: Path, *, per_channel: bool = True) -> Path:
    """onnxruntime dynamic quantisation of `source` into `target` (see the module docstring)."""
    require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=["MatMul", "Gather"],
        per_channel=per_channel,
        reduce_range=False,  # int8 weights use all 8 bits (VNNI/ARM dot products do not saturate)
        weight_type=QuantType.QInt8,
    )
    return target
