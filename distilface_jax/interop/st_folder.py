"""The sentence-transformers side of a model folder: modules.json and its module folders, read
into a `SentencePipeline` (`load`, with one policy for modules it cannot apply: an error naming
them) and written from one (`save`).

Layout (as `SentenceTransformer.save` writes it):
    modules.json                 Transformer ("") → Pooling (1_Pooling) → [Dense (2_Dense)] → [Normalize]
    sentence_bert_config.json    max_seq_length
    1_Pooling/config.json        CLS or mean pooling, matching our pooler
    2_Dense/                     SimCSE's MLP head (Linear + tanh) when the recipe keeps it
    N_Dense/                     a distilled student's kept width map D_s → D_t (Linear, identity)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_pipeline import PROJECTION, SentencePipeline

_TANH = "torch.nn.modules.activation.Tanh"
_IDENTITY = "torch.nn.modules.linear.Identity"
# Poolers that sentence-transformers' Pooling module can express (its Transformer module only
# exposes the last layer, so the multi-layer averages cannot be exported as ST modules).
ST_POOLING_MODE = {"cls": "cls", "cls_before_pooler": "cls", "avg": "mean"}


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def _write_dense(folder: Path, kernel, bias, activation: str) -> None:
    """A sentence-transformers Dense module: y = activation(x W + b); torch's Linear stores Wᵀ."""
    from safetensors.numpy import save_file

    kernel = np.asarray(kernel, np.float32)  # [in, out]
    _write_json(
        folder / "config.json",
        {
            "in_features": kernel.shape[0],
            "out_features": kernel.shape[1],
            "bias": True,
            "activation_function": activation,
        },
    )
    save_file(
        {"linear.weight": np.ascontiguousarray(kernel.T), "linear.bias": np.asarray(bias, np.float32)},
        str(folder / "model.safetensors"),
    )


def save(folder: Path, pipeline: SentencePipeline, params: dict) -> None:
    """The sentence-transformers modules of `pipeline` (beside the HF files `hf.save_pretrained`
    writes): Pooling, the MLP head as Dense(tanh) when it is applied, the width map
    (`params["projection"]`, {"kernel" [D_s, D_t], "bias" [D_t]}) as a linear Dense, Normalize;
    max_seq_length is the pipeline's truncation (default: the model's limit, at most 512).
    `output_dim` (Matryoshka) becomes `truncate_dim`: sentence-transformers keeps the first D
    coordinates (after Normalize, without re-normalising: the cosines are those of re-normalised
    vectors)."""
    pipeline.check_params(params)
    config, pooler = pipeline.encoder, pipeline.pooler
    if pooler not in ST_POOLING_MODE:
        raise ValueError(
            f"pooler {pooler!r} cannot be expressed with sentence-transformers modules; "
            f"export with one of {sorted(ST_POOLING_MODE)}"
        )
    mode = ST_POOLING_MODE[pooler]
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": config.hidden_size,
            "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    if pipeline.uses_mlp:
        dense = params["mlp"]["dense"]
        _write_dense(folder / "2_Dense", dense["kernel"], dense["bias"], _TANH)
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if pipeline.width_map is not None:
        index, projection = len(modules), params[PROJECTION]
        _write_dense(folder / f"{index}_Dense", projection["kernel"], projection["bias"], _IDENTITY)
        modules.append(
            {"idx": index, "name": str(index), "path": f"{index}_Dense", "type": "sentence_transformers.models.Dense"}
        )
    if pipeline.normalize:
        index = len(modules)
        modules.append(
            {
                "idx": index,
                "name": str(index),
                "path": f"{index}_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / f"{index}_Normalize").mkdir()
    _write_json(folder / "modules.json", modules)
    max_seq_length = pipeline.max_length or min(512, config.max_position_embeddings)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    model_config = {"similarity_fn_name": "cosine"}
    if pipeline.output_dim is not None:
        model_config["truncate_dim"] = int(pipeline.output_dim)
    _write_json(folder / "config_sentence_transformers.json", model_config)


def read_truncate_dim(folder: Path) -> Optional[int]:
    """config_sentence_transformers.json's truncate_dim (a Matryoshka model's kept width), if any."""
    path = folder / "config_sentence_transformers.json"
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get("truncate_dim")
    return int(value) if value else None


def _mlp_dense_path(folder: Path, hidden_size: int) -> Optional[str]:
    """The folder of a Dense(H→H, tanh) module right after CLS pooling (SimCSE's MLP head), from
    the module configs alone; None when there is none."""
    modules = _modules(folder)
    for previous, module in zip(modules, modules[1:]):
        if not (previous.get("type", "").endswith("Pooling") and module.get("type", "").endswith("Dense")):
            continue
        pooling = json.loads((folder / previous["path"] / "config.json").read_text())
        dense_config = json.loads((folder / module["path"] / "config.json").read_text())
        if not (
            pooling.get("pooling_mode_cls_token")
            and dense_config.get("activation_function") == _TANH
            and dense_config.get("in_features") == hidden_size == dense_config.get("out_features")
        ):
            return None
        return module["path"]
    return None


def _read_dense(module_folder: Optional[Path]) -> Optional[dict]:
    """{"kernel" [in, out], "bias" [out]} of a Dense module folder (torch's Linear stores Wᵀ)."""
    if module_folder is None:
        return None
    from safetensors.numpy import load_file

    weights = load_file(str(module_folder / "model.safetensors"))
    return {
        "kernel": np.ascontiguousarray(weights["linear.weight"].T.astype(np.float32)),
        "bias": weights["linear.bias"].astype(np.float32),
    }


def read_mlp_dense(folder: Path, hidden_size: int) -> Optional[dict]:
    """The MLP head's weights from a sentence-transformers folder, if it has one."""
    path = _mlp_dense_path(folder, hidden_size)
    return _read_dense(None if path is None else folder / path)


def _linear_dense_path(folder: Path) -> Optional[str]:
    """The folder of a linear Dense module (identity activation) after Pooling: the width map
    of a student exported with `distill.keep_projection`; None when there is none."""
    after_pooling = False
    for module in _modules(folder):
        kind = module.get("type", "")
        after_pooling = after_pooling or kind.endswith("Pooling")
        if after_pooling and kind.endswith("Dense"):
            dense_config = json.loads((folder / module["path"] / "config.json").read_text())
            if dense_config.get("activation_function") == _IDENTITY:
                return module["path"]
    return None


def _pooling(folder: Path) -> Optional[tuple[dict, dict]]:
    """(the Pooling module's modules.json entry, its config) of the first Pooling module, if any."""
    pooling = next((m for m in _modules(folder) if m.get("type", "").endswith("Pooling")), None)
    if pooling is None:
        return None
    return pooling, json.loads((folder / pooling["path"] / "config.json").read_text())


def read_pooler(folder: Path) -> Optional[tuple[str, bool]]:
    """(pooler, apply_mlp) that a sentence-transformers folder's modules describe, if it has them."""
    found = _pooling(folder)
    if found is None:
        return None
    _, pooling_config = found
    if pooling_config.get("pooling_mode_mean_tokens"):
        return "avg", True
    if pooling_config.get("pooling_mode_cls_token"):
        has_mlp = _mlp_dense_path(folder, pooling_config.get("word_embedding_dimension", -1)) is not None
        return ("cls", True) if has_mlp else ("cls_before_pooler", True)
    return None


def _modules(folder: Path) -> list[dict]:
    modules_file = folder / "modules.json"
    return json.loads(modules_file.read_text()) if modules_file.exists() else []


def normalizes(folder: Path) -> bool:
    """True when the sentence-transformers pipeline ends in a Normalize module."""
    return any(m.get("type", "").endswith("Normalize") for m in _modules(folder))


def _max_seq_length(folder: Path) -> Optional[int]:
    """sentence_bert_config.json's max_seq_length (the folder's truncation), if it says."""
    settings = folder / "sentence_bert_config.json"
    if settings.exists():
        value = json.loads(settings.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


class UnsupportedModuleError(ValueError):
    """A sentence-transformers module whose step the pipeline cannot reproduce: the embeddings
    would not be the folder's own."""


class NoPoolingError(ValueError):
    """A folder without a Pooling module (a plain HF folder), and no pooler given."""


def unsupported_modules(folder: Path, hidden_size: int, *, own_pooler: bool = False) -> list[str]:
    """Modules of a sentence-transformers folder that `SentencePipeline` does not reproduce:
    anything but Transformer, a CLS or mean Pooling, SimCSE's Dense(tanh) MLP head after CLS
    pooling, one linear Dense (a kept width map) and Normalize. `own_pooler`: the caller pools
    its own way, so the folder's Pooling module is not read."""
    supported_dense = {_mlp_dense_path(folder, hidden_size), _linear_dense_path(folder)} - {None}
    unsupported = []
    modules = _modules(folder)
    for index, module in enumerate(modules):
        kind = module.get("type", "")
        if kind.endswith("Normalize") and index != len(modules) - 1:
            unsupported.append(f"{module.get('path') or '.'} ({kind}, not the last module)")
            continue
        if kind.endswith("Pooling") and not own_pooler and read_pooler(folder) is None:
            unsupported.append(f"{module.get('path') or '.'} ({kind}, a pooling mode other than cls or mean)")
            continue
        if kind.endswith(("Transformer", "Pooling", "Normalize")) or module.get("path") in supported_dense:
            continue
        unsupported.append(f"{module.get('path') or '.'} ({kind})")
    return unsupported


def load(
    folder: Path,
    encoder: EncoderConfig,
    tokenizer,
    *,
    pooler: Optional[str] = None,
    apply_mlp: bool = True,
    default_pooler: Optional[str] = None,
) -> tuple[SentencePipeline, Optional[dict]]:
    """(the pipeline a model folder's sentence-transformers modules describe, the weights of its
    width map or None), for the encoder and tokenizer read from the same folder.

    One policy for modules it cannot apply: `UnsupportedModuleError` naming each of them, since
    embeddings without them would silently not be the folder's. `pooler` (with `apply_mlp`)
    replaces the folder's Pooling module; without one, the folder's Pooling decides, or
    `default_pooler` when it has none (a plain HF folder); with neither, `NoPoolingError`.
    `max_length` is the folder's `max_seq_length` (None when it does not say).
    """
    unsupported = unsupported_modules(folder, encoder.hidden_size, own_pooler=pooler is not None)
    if unsupported:
        raise UnsupportedModuleError(
            f"{folder}: sentence-transformers modules not reproduced here: {', '.join(unsupported)}; "
            "its embeddings would not be its own"
        )
    if pooler is None:
        described = read_pooler(folder)
        if described is None and default_pooler is None:
            raise NoPoolingError(f"{folder}: no sentence-transformers Pooling module, and no pooler was given")
        pooler, apply_mlp = described or (default_pooler, True)
    path = _linear_dense_path(folder)
    width_map = _read_dense(None if path is None else folder / path)
    pipeline = SentencePipeline(
        encoder,
        tokenizer,
        pooler=pooler,
        apply_mlp=apply_mlp,
        width_map=None if width_map is None else int(width_map["kernel"].shape[1]),
        output_dim=read_truncate_dim(folder),
        normalize=normalizes(folder),
        max_length=_max_seq_length(folder),
    )
    return pipeline, width_map


def pooler_mismatch(folder: Path, pooler: str) -> Optional[str]:
    """A warning when a sentence-transformers folder pools differently from `pooler` (the
    config's); None when it has no Pooling module or the two agree (cls and cls_before_pooler
    both read the CLS token, as the folder's CLS pooling does)."""
    found = _pooling(folder)
    if found is None:
        return None
    _, pooling_config = found
    modes = [
        key[len("pooling_mode_") :].replace("_tokens", "").replace("_token", "")
        for key, on in pooling_config.items()
        if key.startswith("pooling_mode_") and on
    ]
    theirs = {"cls": "cls", "mean": "mean"}.get(modes[0]) if len(modes) == 1 else None
    if theirs is not None and theirs == ST_POOLING_MODE.get(pooler):
        return None
    suggestion = {"mean": "avg", "cls": "cls_before_pooler"}.get(theirs)
    fix = (
        f"set --config.model.pooler={suggestion} to train with it"
        if suggestion
        else "set --config.model.pooler to match it"
    )
    return (
        f"{folder}: its sentence-transformers pooling is {'+'.join(modes) or 'none'}, but config.model.pooler "
        f"is {pooler!r}; {fix}, or keep {pooler!r} knowingly"
    )
