"""A trained run's model, read back from its workdir: what `evaluate`, `encode` and `export`
load with `--workdir`, and the rule by which a run's embeddings are read out at evaluation.

A workdir is self-describing, so those tools need nothing but its path:
    WORKDIR/model/config.json + tokenizer files   the encoder shape (HF config) and tokenizer
    WORKDIR/config.json                           the resolved training config (pooler, MLP use)
    WORKDIR/checkpoints/, WORKDIR/best/           Orbax checkpoints (params)
The first two are written when the run starts (`save_run_description`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp

from distilface_jax import run_folder
from distilface_jax.interop import hf
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import init_params
from distilface_jax.models.sentence_pipeline import PROJECTION, SentencePipeline
from distilface_jax.training import checkpoint


@dataclasses.dataclass
class RunModel:
    """A run's checkpoint and how to embed with it (what dev evaluation measured, export writes)."""

    pipeline: SentencePipeline  # its MLP head dropped when train-only; a distilled student's teacher pipeline
    params: Any  # carries a width map only where the pipeline applies it
    step: int = 0

    @property
    def config(self) -> EncoderConfig:
        return self.pipeline.encoder

    @property
    def tokenizer(self) -> Any:
        return self.pipeline.tokenizer


def eval_pooling(model_config) -> tuple[str, bool]:
    """(pooler, apply_mlp) at evaluation from a run's `config.model` (ConfigDict or its JSON dict):
    SimCSE drops a train-only MLP head (`mlp_only_train`)."""
    pooler = model_config["pooler"]
    return pooler, not (pooler == "cls" and model_config["mlp_only_train"])


def save_run_description(workdir: str, config, encoder_config: EncoderConfig, tokenizer) -> None:
    """Written once, when a run starts: what `load_run_model` reads back besides the params."""
    folder = run_folder.path(workdir, run_folder.MODEL_DIR)
    run_folder.save_folder(tokenizer.save_pretrained, folder)
    run_folder.write_text(folder / "config.json", json.dumps(encoder_config.to_hf_dict(), indent=2))
    run_folder.write_text(run_folder.path(workdir, run_folder.RUN_CONFIG_FILE), config.to_json_best_effort(indent=2))


def read_run_config(workdir: str) -> dict:
    path = run_folder.path(workdir, run_folder.RUN_CONFIG_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{workdir}: not a training run folder (no {run_folder.RUN_CONFIG_FILE})")
    return json.loads(path.read_text())


def load_run_model(workdir: str, step: Optional[str] = None) -> RunModel:
    """Params of checkpoint `step` (a number, 'best', or None for the latest) with the run's
    tokenizer and evaluation pooling, placed on this process's first device."""
    run_config = read_run_config(workdir)
    folder = run_folder.path(workdir, run_folder.MODEL_DIR)
    encoder_config, _ = run_folder.load_folder(folder, lambda local: hf.load_config(Path(local)))
    tokenizer = run_folder.load_folder(folder, lambda local: hf.load_tokenizer(Path(local)))
    pooler, apply_mlp = eval_pooling(run_config["model"])
    runs = checkpoint.RunCheckpoints(workdir, read_only=True)
    number, best = checkpoint.resolve_step(runs, step)
    with_mlm = bool(run_config["loss"]["do_mlm"])
    tie_decoder = bool(run_config["loss"].get("mlm_tie_decoder", True))  # Runs before the key tied it.
    shapes = jax.eval_shape(
        lambda: init_params(encoder_config, jax.random.key(0), with_mlm_head=with_mlm, tie_mlm_decoder=tie_decoder)
    )
    from distilface_jax.distill import run as distill_run  # Here: distill.run reads eval_pooling (a cycle).

    distilled = distill_run.read_description(workdir) or {}
    if distilled.get("projection"):  # The student→teacher width map trained with the loss.
        width_in, width_out = distilled["projection"]
        shapes = {
            **shapes,
            PROJECTION: {
                "kernel": jax.ShapeDtypeStruct((width_in, width_out), jnp.float32),
                "bias": jax.ShapeDtypeStruct((width_out,), jnp.float32),
            },
        }
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    params = runs.restore_params(number, checkpoint.abstract_like(shapes, device), best=best)
    runs.close()
    kept = bool(distilled.get("keep_projection")) and PROJECTION in params
    if not kept:  # A training head only: the model is the student alone.
        params = {name: value for name, value in params.items() if name != PROJECTION}
    pipeline = SentencePipeline(
        encoder_config,
        tokenizer,
        pooler=pooler,
        apply_mlp=apply_mlp,
        width_map=int(params[PROJECTION]["kernel"].shape[1]) if kept else None,
        normalize=bool(distilled.get("normalize", False)),
        max_length=distilled.get("max_length"),
    )
    return RunModel(pipeline, params, number)
