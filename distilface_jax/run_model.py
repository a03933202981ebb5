"""The model of a run: built from its config at the start, and read back from its workdir later.

A workdir is self-describing, so `evaluate`, `encode` and `export` need nothing but its path:
    WORKDIR/model/config.json + tokenizer files   the encoder shape (HF config) and tokenizer
    WORKDIR/config.json                           the resolved training config (pooler, MLP use)
    WORKDIR/checkpoints/, WORKDIR/best/           Orbax checkpoints (params)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp

from distilface_jax import hf, tiny_data, workdir_files
from distilface_jax.atomic import public_mode
from distilface_jax.config_base import BUILTIN_TINY
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import init_params

logger = logging.getLogger(__name__)
MODEL_DIR = "model"
RUN_CONFIG_FILE = "config.json"


@dataclasses.dataclass
class RunModel:
    config: EncoderConfig
    params: Any
    tokenizer: Any
    pooler: str  # the pooler evaluation uses
    apply_mlp: bool  # False when the recipe trains the MLP head only (mlp_only_train)
    step: int = 0
    normalize: bool = False  # a distilled student normalises as its teacher does
    project: bool = False  # a distilled student whose width map D_s → D_t is part of the model
    max_length: Optional[int] = None  # a distilled student reads as many tokens as its teacher


def builtin_dir(workdir: str) -> str:
    return os.path.join(workdir, "builtin")


def prepare_builtin_tiny(workdir: str) -> dict[str, str]:
    """Generates the offline demo's corpus, vocabulary and STS fixture (idempotent).

    Written to a private folder and renamed into place, so processes of a multi-process run
    that generate at the same time never read each other's half-written files.
    """
    folder = builtin_dir(workdir)
    if not os.path.isdir(folder):
        os.makedirs(workdir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".builtin.tmp-", dir=workdir)
        public_mode(staging, directory=True)
        sentences = tiny_data.write_tiny_corpus(os.path.join(staging, "corpus.txt"))
        tiny_data.write_tiny_sts(os.path.join(staging, "sts"))
        tiny_data.write_tiny_vocab(os.path.join(staging, "vocab.txt"), sentences)
        try:
            os.rename(staging, folder)
        except OSError:  # Another process renamed its identical copy first.
            shutil.rmtree(staging, ignore_errors=True)
    return {"corpus": os.path.join(folder, "corpus.txt"), "vocab": os.path.join(folder, "vocab.txt"),
            "sts": os.path.join(folder, "sts")}


def resolve_builtin(path: str, workdir: str, kind: str) -> str:
    """`builtin:tiny` → the generated file or folder of that kind; any other path unchanged."""
    if path != BUILTIN_TINY:
        return path
    return prepare_builtin_tiny(workdir)[kind]


@dataclasses.dataclass
class InitialModel:
    encoder_config: EncoderConfig  # with the run's dropout
    params: Any
    tokenizer: Any
    checkpoint_has_mlp: bool  # the checkpoint carries an MLP head (BERT pooler, sentence-transformers Dense)


def initial_model(config, workdir: str) -> InitialModel:
    """The model a new run starts from. `config.model.mlp_init` picks the MLP head: "random"
    (SimCSE's fresh N(0, 0.02) head, seeded by `config.seed`) or "pretrained" (the checkpoint's
    pooler / Dense head; an error for a checkpoint without one)."""
    model_config = config.model
    if model_config.mlp_init not in hf.MLP_INITS:
        raise ValueError(f"config.model.mlp_init must be one of {hf.MLP_INITS}, got {model_config.mlp_init!r}")
    tie_decoder = bool(config.loss.mlm_tie_decoder)
    if model_config.name_or_path == BUILTIN_TINY:
        tokenizer = tiny_data.load_tiny_tokenizer(prepare_builtin_tiny(workdir)["vocab"])
        shape = model_config.tiny
        encoder_config = EncoderConfig(model_type="distilbert", vocab_size=len(tokenizer),
                                       hidden_size=shape.hidden_size, num_layers=shape.num_layers,
                                       num_heads=shape.num_heads, intermediate_size=shape.intermediate_size,
                                       max_position_embeddings=shape.max_position_embeddings,
                                       pad_token_id=tokenizer.pad_token_id)
        params = jax.device_get(init_params(encoder_config, jax.random.key(config.seed),
                                            with_mlm_head=config.loss.do_mlm, tie_mlm_decoder=tie_decoder))
        has_mlp = False
    else:
        loaded = hf.load_pretrained(model_config.name_or_path, with_mlm_head=config.loss.do_mlm, seed=config.seed,
                                    mlp_init=model_config.mlp_init, tie_mlm_decoder=tie_decoder)
        encoder_config, params, tokenizer, has_mlp = loaded.config, loaded.params, loaded.tokenizer, loaded.found_mlp
        warn_pooler_mismatch(Path(loaded.source), model_config.pooler)
    if model_config.mlp_init == "pretrained" and not has_mlp:
        raise ValueError(f"config.model.mlp_init='pretrained', but {model_config.name_or_path} has no MLP head "
                         "(no BERT pooler, no sentence-transformers Dense); use 'random'")
    encoder_config = encoder_config.replace(hidden_dropout=model_config.dropout,
                                            attention_dropout=model_config.attention_dropout)
    return InitialModel(encoder_config, params, tokenizer, has_mlp)


def build_initial_model(config, workdir: str) -> tuple[EncoderConfig, Any, Any]:
    """(encoder config with the run's dropout, initial params, tokenizer) for a new run."""
    model = initial_model(config, workdir)
    return model.encoder_config, model.params, model.tokenizer


def with_legacy_keys(saved: dict, current: dict, checkpoint_has_mlp: bool) -> dict:
    """A saved run config with the keys it predates filled in as the code that wrote it behaved.

      model.mlp_init: that code kept the checkpoint's MLP head when it had one, so "pretrained"
        where the checkpoint carries one, else "random".
      loss.mlm_tie_decoder: that code tied the MLM decoder to the word embeddings (True); with
        no MLM loss there is no decoder, and the current value is taken.
      distill.keep_projection: that code always dropped a student's width map (False).
    A pooler other than 'cls' never applies the MLP in training, so there the current value is
    taken too. Keys already present are left as they are.
    """
    filled = json.loads(json.dumps(saved))
    model, loss = filled.setdefault("model", {}), filled.setdefault("loss", {})
    if "mlp_init" not in model:
        uses_mlp = model.get("pooler") == "cls"
        model["mlp_init"] = ("pretrained" if checkpoint_has_mlp else "random") if uses_mlp \
            else current["model"]["mlp_init"]
    if "mlm_tie_decoder" not in loss:
        loss["mlm_tie_decoder"] = True if loss.get("do_mlm") else current["loss"]["mlm_tie_decoder"]
    if "distill" in filled and "keep_projection" not in filled["distill"]:
        filled["distill"]["keep_projection"] = False  # That code dropped the width map at export.
    return filled


def warn_pooler_mismatch(folder: Path, pooler: str) -> None:
    """Once per run start, on process 0: the model folder's own pooling differs from the config's
    (e.g. the unsup recipe's cls on all-MiniLM-L6-v2, made for mean pooling, loses ~4 STS points)."""
    from distilface_jax import st_folder
    message = st_folder.pooler_mismatch(folder, pooler)
    if message and jax.process_index() == 0:
        logger.warning(message)


def eval_pooling(model_config) -> tuple[str, bool]:
    """(pooler, apply_mlp) at evaluation from a run's `config.model` (ConfigDict or its JSON dict):
    SimCSE drops a train-only MLP head (`mlp_only_train`)."""
    pooler = model_config["pooler"]
    return pooler, not (pooler == "cls" and model_config["mlp_only_train"])


def save_run_description(workdir: str, config, encoder_config: EncoderConfig, tokenizer) -> None:
    folder = workdir_files.path(workdir, MODEL_DIR)
    workdir_files.save_folder(tokenizer.save_pretrained, folder)
    workdir_files.write_text(folder / "config.json", json.dumps(encoder_config.to_hf_dict(), indent=2))
    workdir_files.write_text(workdir_files.path(workdir, RUN_CONFIG_FILE), config.to_json_best_effort(indent=2))


def read_run_config(workdir: str) -> dict:
    path = workdir_files.path(workdir, RUN_CONFIG_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{workdir}: not a training run folder (no {RUN_CONFIG_FILE})")
    return json.loads(path.read_text())


def load_run_model(workdir: str, step: Optional[str] = None) -> RunModel:
    """Params of checkpoint `step` (a number, 'best', or None for the latest) with the run's
    tokenizer and evaluation pooling, placed on this process's first device."""
    from distilface_jax import checkpoint

    run_config = read_run_config(workdir)
    folder = workdir_files.path(workdir, MODEL_DIR)
    encoder_config, _ = workdir_files.load_folder(folder, lambda local: hf.load_config(Path(local)))
    tokenizer = workdir_files.load_folder(folder, lambda local: hf.load_tokenizer(Path(local)))
    pooler, apply_mlp = eval_pooling(run_config["model"])
    runs = checkpoint.RunCheckpoints(workdir, read_only=True)
    number, best = checkpoint.resolve_step(runs, step)
    with_mlm = bool(run_config["loss"]["do_mlm"])
    tie_decoder = bool(run_config["loss"].get("mlm_tie_decoder", True))  # Runs before the key tied it.
    shapes = jax.eval_shape(lambda: init_params(encoder_config, jax.random.key(0), with_mlm_head=with_mlm,
                                                tie_mlm_decoder=tie_decoder))
    from distilface_jax.distill import run as distill_run
    distilled = distill_run.read_description(workdir) or {}
    if distilled.get("projection"):  # The student→teacher width map trained with the loss.
        width_in, width_out = distilled["projection"]
        shapes = dict(shapes, projection={"kernel": jax.ShapeDtypeStruct((width_in, width_out), jnp.float32),
                                          "bias": jax.ShapeDtypeStruct((width_out,), jnp.float32)})
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    params = runs.restore_params(number, checkpoint.abstract_like(shapes, device), best=best)
    runs.close()
    return RunModel(encoder_config, params, tokenizer, pooler, apply_mlp, number,
                    normalize=bool(distilled.get("normalize", False)),
                    project=bool(distilled.get("projection") and distilled.get("keep_projection")),
                    max_length=distilled.get("max_length"))
