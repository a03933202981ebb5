"""The run's record: what a workdir says about how it was trained and how to embed with it.

Written by the training loop on process 0 (`training/trainer.py`), read back by `evaluate`,
`encode` and `export --workdir` (through `trained_model`); the file names are `run_folder`'s,
and their contents are those of every earlier version, so old workdirs read back as before:
    WORKDIR/config.json     the resolved training config: recipe, pooler, MLP use (RUN_CONFIG_FILE)
    WORKDIR/model/          the encoder's HF config.json and the tokenizer files (MODEL_DIR)
    WORKDIR/distill.json    a distilled student's read-out: its teacher, the teacher's
                            normalisation and truncation, the width map's shape and whether it
                            is part of the model (DISTILL_FILE; written by the distillation recipe's run)
    WORKDIR/run_info.json   devices, versions, total steps, extensions (RUN_INFO_FILE)
How to embed with a run is one derivation (`pipeline_of`), used by the recipes for the
trainer's dev evaluation and by `read` for the tools, so dev scores measure what is exported.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Any, Mapping, Optional

from distilface_jax import run_folder
from distilface_jax.config.keys import Config
from distilface_jax.interop import hf
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_pipeline import SentencePipeline


def eval_pooling(model_config) -> tuple[str, bool]:
    """(pooler, apply_mlp) at evaluation from a run's `config.model` (ConfigDict or its JSON dict):
    SimCSE drops a train-only MLP head (`mlp_only_train`)."""
    pooler = model_config["pooler"]
    return pooler, not (pooler == "cls" and model_config["mlp_only_train"])


def pipeline_of(
    model_config, encoder_config: EncoderConfig, tokenizer, distilled: Optional[Mapping[str, Any]] = None
) -> SentencePipeline:
    """How to embed with a run: its evaluation pooling (`eval_pooling`), and for a distilled
    student (`distilled`, the distill.json record) its teacher's normalisation and truncation,
    and the width map when it is part of the model."""
    pooler, apply_mlp = eval_pooling(model_config)
    distilled = distilled or {}
    kept = distilled.get("projection") if distilled.get("keep_projection") else None
    return SentencePipeline(
        encoder_config,
        tokenizer,
        pooler=pooler,
        apply_mlp=apply_mlp,
        width_map=int(kept[1]) if kept else None,
        normalize=bool(distilled.get("normalize", False)),
        max_length=distilled.get("max_length"),
    )


# ----------------------------------------------------------------------------- written when a run starts


def save_run_description(workdir: str, config: Config, encoder_config: EncoderConfig, tokenizer) -> None:
    """Written once, when a run starts: what `read` reads back besides the params."""
    folder = run_folder.path(workdir, run_folder.MODEL_DIR)
    run_folder.save_folder(tokenizer.save_pretrained, folder)
    run_folder.write_text(folder / "config.json", json.dumps(encoder_config.to_hf_dict(), indent=2))
    run_folder.write_text(run_folder.path(workdir, run_folder.RUN_CONFIG_FILE), config.to_json_best_effort(indent=2))


def distill_record(
    *,
    teacher: str,
    teacher_pooler: str,
    normalize: bool,
    projection: Optional[tuple[int, int]],
    keep_projection: bool,
    max_length: Optional[int],
) -> dict:
    """distill.json's content: the teacher (source, pooling), the student's normalisation and
    truncation (the teacher's), the width map's [D_s, D_t] (None: the widths match) and whether
    it is part of the model."""
    return {
        "teacher": teacher,
        "teacher_pooler": teacher_pooler,
        "normalize": normalize,
        "projection": list(projection) if projection is not None else None,
        "keep_projection": bool(keep_projection and projection is not None),
        "max_length": max_length,
    }


def write_recipe_record(workdir: str, records: Mapping[str, dict]) -> None:
    """A recipe's own files of the record ({file name: JSON object}, e.g. distill.json)."""
    for name, record in records.items():
        run_folder.write_text(run_folder.path(workdir, name), json.dumps(record, indent=2))


def write_run_info(
    workdir: str, config: Config, num_devices: int, total_steps: int, start: int, saved_total: Optional[int]
) -> None:
    """run_info.json: where and with what the run (or its latest resumption) ran."""
    import flax
    import jax
    import optax
    import orbax.checkpoint
    import transformers

    info = {
        "num_devices": num_devices,
        "num_processes": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "total_steps": total_steps,
        "resumed_from_step": start or None,
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax-checkpoint": orbax.checkpoint.__version__,
            "transformers": transformers.__version__,
        },
        "config": config.to_dict(),
    }
    record_extension(info, workdir, start, saved_total, total_steps)
    run_folder.write_text(run_folder.path(workdir, run_folder.RUN_INFO_FILE), json.dumps(info, indent=2, default=str))


def record_extension(info: dict, workdir: str, start: int, saved_total: Optional[int], total_steps: int) -> None:
    """Adds the run's extensions (earlier ones from the previous run_info.json, and this one) to `info`."""
    previous = run_folder.path(workdir, run_folder.RUN_INFO_FILE)
    extensions = []
    if start and previous.exists():
        try:
            extensions = list(json.loads(previous.read_text()).get("extensions", []))
        except (ValueError, OSError):
            extensions = []
    extensions = [
        e
        for e in extensions
        if e.get("from_step", 0) < start
        or (e.get("from_step") == start and saved_total is not None and saved_total != total_steps)
    ]
    if (
        saved_total is not None
        and saved_total != total_steps
        and not any(e.get("from_step") == start and e.get("total_steps") == total_steps for e in extensions)
    ):
        extensions.append({"from_step": start, "previous_total_steps": saved_total, "total_steps": total_steps})
    if extensions:
        info["extensions"] = extensions


# ----------------------------------------------------------------------------- read back


def read_run_config(workdir: str) -> dict:
    path = run_folder.path(workdir, run_folder.RUN_CONFIG_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{workdir}: not a training run folder (no {run_folder.RUN_CONFIG_FILE})")
    return json.loads(path.read_text())


def read_distill_record(workdir: str) -> Optional[dict]:
    path = run_folder.path(workdir, run_folder.DISTILL_FILE)
    return json.loads(path.read_text()) if path.exists() else None


@dataclasses.dataclass(frozen=True)
class RunRecord:
    config: dict  # the resolved training config, as saved (JSON)
    pipeline: SentencePipeline  # how to embed with the run
    width_map_shape: Optional[tuple[int, int]]  # [D_s, D_t] of the checkpoint's width map (kept or not)


def read(workdir: str) -> RunRecord:
    """The record of a run folder (local or a bucket): its config, and how to embed with it."""
    run_config = read_run_config(workdir)
    folder = run_folder.path(workdir, run_folder.MODEL_DIR)
    encoder_config, _ = run_folder.load_folder(folder, lambda local: hf.load_config(Path(local)))
    tokenizer = run_folder.load_folder(folder, lambda local: hf.load_tokenizer(Path(local)))
    distilled = read_distill_record(workdir) or {}
    shape = distilled.get("projection")
    return RunRecord(
        run_config,
        pipeline_of(run_config["model"], encoder_config, tokenizer, distilled),
        tuple(shape) if shape else None,
    )
