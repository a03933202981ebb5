"""A trained run's model, read back from its workdir: what `evaluate`, `encode` and `export`
load with `--workdir`.

A workdir is self-describing, so those tools need nothing but its path: its record
(`run_record`: the training config, the encoder and tokenizer, a distilled student's read-out)
says how to embed with it, and WORKDIR/checkpoints/, WORKDIR/best/ hold the params.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from distilface_jax import run_record
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import init_params
from distilface_jax.models.sentence_pipeline import PROJECTION, SentencePipeline
from distilface_jax.run_record import eval_pooling, read_run_config  # noqa: F401  (their home is run_record)
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


def load_run_model(workdir: str, step: Optional[str] = None) -> RunModel:
    """Params of checkpoint `step` (a number, 'best', or None for the latest) with the run's
    tokenizer and evaluation pooling, placed on this process's first device."""
    record = run_record.read(workdir)
    run_config, pipeline = record.config, record.pipeline
    runs = checkpoint.RunCheckpoints(workdir, read_only=True)
    number, best = checkpoint.resolve_step(runs, step)
    with_mlm = bool(run_config["loss"]["do_mlm"])
    tie_decoder = bool(run_config["loss"].get("mlm_tie_decoder", True))  # Runs before the key tied it.
    shapes = jax.eval_shape(
        lambda: init_params(pipeline.encoder, jax.random.key(0), with_mlm_head=with_mlm, tie_mlm_decoder=tie_decoder)
    )
    if record.width_map_shape:  # The student→teacher width map trained with the loss.
        width_in, width_out = record.width_map_shape
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
    if pipeline.width_map is None:  # A training head only: the model is the student alone.
        params = {name: value for name, value in params.items() if name != PROJECTION}
    return RunModel(pipeline, params, number)
