"""Hugging Face import and export: local folders (and hub ids, through `huggingface_hub`).

Import is strict, in the spirit of nanoGPT's `from_pretrained`: every required parameter is
filled from exactly one tensor of the asserted shape, and every tensor in the checkpoint is
either used or on the declared `known_unused` list. Anything else is an error naming it.
Only safetensors or `torch.load(weights_only=True)` are read: nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np

from distilface_jax.interop import hf_names, st_folder
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import init_params
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.run_folder import atomic_directory

logger = logging.getLogger(__name__)

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "2_Dense/*", "1_Pooling/*"]


class ModelLoadError(ValueError):
    """A model folder or hub id that cannot be turned into our parameters."""


@dataclasses.dataclass
class PretrainedModel:
    config: EncoderConfig
    params: dict  # SentenceEncoder parameter tree (float32 numpy leaves)
    tokenizer: Any  # a transformers fast tokenizer
    source: str  # the folder it was read from
    found_mlp: bool = False  # True when the MLP head came from the checkpoint, not a random init


def resolve_model_dir(name_or_path: str) -> Path:
    """A local folder as is; anything else is a hub id, downloaded (weights + tokenizer only)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{name_or_path}: is a file, not a model folder")
    if name_or_path.startswith((".", "/", "~")):
        raise ModelLoadError(f"{name_or_path}: no such folder")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id=name_or_path, allow_patterns=_HUB_PATTERNS))
        if not any(folder.glob("*.safetensors")):
            # Older repos (e.g. the published SimCSE checkpoints) only have the pickle format; it
            # is read with torch.load(weights_only=True), never unpickled as arbitrary objects.
            folder = Path(snapshot_download(repo_id=name_or_path, allow_patterns=_HUB_PATTERNS + ["pytorch_model.bin"]))
        return folder
    except Exception as error:  # Offline, unknown id, gated repo: all one message for the user.
        raise ModelLoadError(f"{name_or_path}: no such local folder, and the hub download failed: {error}") from error


def read_state_dict(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of a HF checkpoint folder as float32 numpy arrays."""
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.exists():
        return _read_safetensors(single)
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(_read_safetensors(model_dir / shard))
        return tensors
    pickle_file = model_dir / "pytorch_model.bin"
    if pickle_file.exists():
        try:
            import torch
        except ImportError as error:
            raise ModelLoadError(
                f"{pickle_file}: reading .bin checkpoints needs torch; convert to safetensors"
            ) from error
        # weights_only: tensors and plain containers only, so a hostile file cannot run code.
        state = torch.load(pickle_file, map_location="cpu", weights_only=True)
        return {name: tensor.float().numpy() for name, tensor in state.items()}
    raise ModelLoadError(f"{model_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    tensors = {}
    # framework="flax" reads bfloat16 too, which plain numpy cannot represent.
    with safe_open(str(path), framework="flax") as handle:
        for name in handle.keys():
            tensors[name] = np.asarray(handle.get_tensor(name), dtype=np.float32)
    return tensors


def _canonical_name(name: str, prefix: str) -> str:
    """Drops the family prefix, and renames TF-era LayerNorm `gamma`/`beta` (still in the hub's
    original bert-base-uncased files) to `weight`/`bias`, as `transformers` does on load."""
    if name.startswith(prefix):
        name = name[len(prefix) :]
    if name.endswith(".gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith(".beta"):
        return name[: -len("beta")] + "bias"
    return name


def _strip_family_prefix(state: dict[str, np.ndarray], model_type: str) -> dict[str, np.ndarray]:
    prefix = hf_names.FAMILY_PREFIX[model_type]
    renamed = {_canonical_name(name, prefix): value for name, value in state.items()}
    if len(renamed) != len(state):
        raise ModelLoadError(f"checkpoint holds the same tensor under two names (with and without {prefix!r})")
    return renamed


def _to_ours(value: np.ndarray, transform: str) -> np.ndarray:
    return value.T if transform == hf_names.LINEAR else value


def _fill(params: dict, rows, state: dict, source: str, *, required: bool) -> set[str]:
    """Writes each row's tensor into `params` (in place); returns the HF names used."""
    used = set()
    for row in rows:
        if row.hf_name not in state:
            if required:
                raise ModelLoadError(f"{source}: missing tensor {row.hf_name!r} (for parameter {'/'.join(row.path)})")
            continue
        target = _get(params, row.path)
        value = _to_ours(state[row.hf_name], row.transform)
        if value.shape != target.shape:
            raise ModelLoadError(
                f"{source}: tensor {row.hf_name!r} has shape {state[row.hf_name].shape}, expected "
                f"{_to_ours(np.zeros(target.shape), row.transform).shape} from config.json"
            )
        _set(params, row.path, np.ascontiguousarray(value, dtype=np.float32))
        used.add(row.hf_name)
    return used


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def load_config(model_dir: Path) -> tuple[EncoderConfig, dict]:
    config_file = model_dir / "config.json"
    if not config_file.exists():
        raise ModelLoadError(f"{config_file}: missing (not a Hugging Face model folder)")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{config_file}: invalid JSON ({error})") from error
    try:
        return EncoderConfig.from_hf_dict(raw, source=str(config_file)), raw
    except (KeyError, ValueError) as error:
        raise ModelLoadError(str(error).strip("'\"")) from error


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        # Never trust_remote_code: a model folder must not be able to run code on import.
        return AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, trust_remote_code=False)
    except Exception as error:
        raise ModelLoadError(f"{model_dir}: cannot load its tokenizer ({error})") from error


MLP_INITS = ("random", "pretrained")


def load_pretrained(
    name_or_path: str,
    *,
    with_mlm_head: bool = False,
    seed: int = 0,
    mlp_init: str = "pretrained",
    tie_mlm_decoder: bool = False,
) -> PretrainedModel:
    """HF folder or hub id → config, parameters, tokenizer.

    The MLP head: with `mlp_init="pretrained"` (what `encode`/`evaluate --model` use) a BERT
    checkpoint's pooler, or a sentence-transformers Dense(tanh) module, becomes the head
    (`found_mlp`); with `"random"` the head is drawn fresh from `seed`, N(0, initializer_range)
    weights and zero bias, as SimCSE's `BertForCL` builds its `MLPLayer` (its BERT has
    `add_pooling_layer=False`, so the pooler is never read). Heads the checkpoint lacks (the
    MLP for a DistilBERT, the MLM head when asked for) are drawn the same way.

    The MLM head (`with_mlm_head`) continues from the checkpoint's own *ForMaskedLM head when
    it has one, its decoder untied (see `MLMHead`) and starting from the checkpoint's decoder
    matrix, or the word embeddings it is tied to. SimCSE's `BertForCL` instead starts its
    `lm_head` at random: transformers looks for `lm_head.*`, the checkpoint names it
    `cls.predictions.*`.
    """
    if mlp_init not in MLP_INITS:
        raise ValueError(f"mlp_init must be one of {MLP_INITS}, got {mlp_init!r}")
    model_dir = resolve_model_dir(name_or_path)
    config, _ = load_config(model_dir)
    source = str(model_dir)
    state = _strip_family_prefix(read_state_dict(model_dir), config.model_type)
    params = jax.tree_util.tree_map(
        np.asarray,
        init_params(config, jax.random.key(seed), with_mlm_head=with_mlm_head, tie_mlm_decoder=tie_mlm_decoder),
    )
    random_mlp = jax.tree_util.tree_map(np.copy, params["mlp"])  # `_fill` writes into params["mlp"]

    used = _fill(params, hf_names.encoder_rows(config), state, source, required=True)
    head_rows = hf_names.bert_pooler_rows() if config.model_type == "bert" else []
    used |= _fill(params, head_rows, state, source, required=False)
    found_mlp = bool(head_rows) and head_rows[0].hf_name in used
    dense = st_folder.read_mlp_dense(model_dir, config.hidden_size)
    if dense is not None:  # A sentence-transformers Dense(tanh) after CLS pooling is the MLP head.
        params["mlp"]["dense"] = dense
        found_mlp = True
    if mlp_init == "random":
        params["mlp"] = random_mlp  # The checkpoint's head was read (and checked), not kept.
    mlm_rows = hf_names.mlm_head_rows(config)
    decoder_row = hf_names.mlm_decoder_row(config)
    mlm_names = {row.hf_name for row in mlm_rows} | {decoder_row.hf_name}
    if with_mlm_head:
        used |= _fill(params, mlm_rows, state, source, required=False)
        if not {row.hf_name for row in mlm_rows} & used:
            logger.info("%s has no MLM head: it is initialised randomly", source)
        elif not tie_mlm_decoder:
            used |= _fill(params, [decoder_row], state, source, required=False)
            if decoder_row.hf_name not in used:  # Tied in the checkpoint: the word embeddings are its value.
                params["mlm_head"]["decoder"] = np.ascontiguousarray(
                    params["encoder"]["embeddings"]["word_embeddings"]["embedding"].T
                )
    else:
        used |= mlm_names & set(state)  # Present but deliberately unused.
    unused = [
        name
        for name in state
        if name not in used and not any(marker in name for marker in hf_names.known_unused(config))
    ]
    if unused:
        raise ModelLoadError(
            f"{source}: unexpected tensors not in the {config.model_type} table: {sorted(unused)[:10]}"
        )
    return PretrainedModel(config, params, load_tokenizer(model_dir), source, found_mlp)


def to_hf_state_dict(config: EncoderConfig, params: dict) -> dict[str, np.ndarray]:
    """Our parameters → the state dict of HF's base `AutoModel` (no family prefix)."""
    rows = hf_names.encoder_rows(config)
    if config.model_type == "bert":
        rows = rows + hf_names.bert_pooler_rows()  # BertModel expects its pooler.
    return {
        row.hf_name: np.ascontiguousarray(_to_ours(np.asarray(_get(params, row.path), np.float32), row.transform))
        for row in rows
    }


def _without_token_types(tokenizer_config: Path) -> None:
    """A DistilBERT folder's tokenizer returns only what DistilBertModel.forward takes, as HF's own
    DistilBertTokenizer declares: a BERT tokenizer (e.g. a student cut from a BERT teacher's) would
    also return token_type_ids, which sentence-transformers 5.x passes on and DistilBERT refuses."""
    settings = json.loads(tokenizer_config.read_text())
    settings["model_input_names"] = ["input_ids", "attention_mask"]
    tokenizer_config.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")


def save_pretrained(
    out_dir: str | os.PathLike,
    pipeline: SentencePipeline,
    params: dict,
    *,
    overwrite: bool = False,
    write_extra: Optional[Callable[[Path], Any]] = None,
) -> Path:
    """Writes a folder that `transformers.AutoModel` and `sentence_transformers.SentenceTransformer`
    load: the encoder and tokenizer as HF files, the rest of `pipeline` as sentence-transformers
    modules (`st_folder.save`).

    `write_extra(folder)` adds files to the folder before it appears (e.g. the ONNX graphs).
    Atomic: everything is written to a temporary sibling, then renamed, so a failure leaves
    no half-written model behind.
    """
    from safetensors.numpy import save_file

    params = jax.device_get(params)
    config = pipeline.encoder
    with atomic_directory(out_dir, overwrite=overwrite) as staging:
        hf_config = dict(config.to_hf_dict())
        import transformers

        hf_config["transformers_version"] = transformers.__version__
        (staging / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        save_file(to_hf_state_dict(config, params), str(staging / "model.safetensors"), metadata={"format": "pt"})
        pipeline.tokenizer.save_pretrained(str(staging))
        if pipeline.encoder.model_type == "distilbert":
            _without_token_types(staging / "tokenizer_config.json")
        st_folder.save(staging, pipeline, params)
        if write_extra is not None:
            write_extra(staging)
    return Path(out_dir)
