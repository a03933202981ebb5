"""Resuming a run from its latest checkpoint: which settings may differ, how an old workdir's
config is read, and continuing a finished run to a greater length (`--config.extend=True`).

May change on resume (`MAY_CHANGE`, an allow-list): how often the run logs, evaluates and
saves, the compute dtype and attention kernel, GradCache chunking, the profile window, where
the token cache and the evaluation data live,
whether batches come from the token store and how they are prefetched, and evaluation settings: none changes what is
computed. Any other difference in the config (a key added later included) would silently
train a different run, so it is refused, naming every difference.

A run's length (`max_steps`, or `num_epochs` x steps per epoch) plans its learning-rate
schedule, so resuming with another length would silently train a different run: without
`extend` it is refused like any other run-defining change. With `extend`, training continues
from the latest checkpoint and the schedule is re-planned to the new total: from that step on
the learning rate is the one a run planned for the new total would have had (linear decay
from `learning_rate` to 0 at the new last step). Each extension is recorded in run_info.json
under "extensions" (from which step, the old and the new total; `run_record.record_extension`).

All of it is checked before the run writes anything or starts expensive work (`previous_run`,
`check_config` first thing; the model's shape and the planned length once the model and data
are read, before anything is written): a refused run leaves its workdir byte for byte as it was.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from distilface_jax import run_folder
from distilface_jax.config.keys import Config

# Settings that may differ between a checkpoint and the config resuming it: they do not change
# what is computed. A key is allowed with everything below it ("eval" = every eval.* setting).
MAY_CHANGE = (
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "grad_cache_chunk_size",
    "extend",
    "profile_steps",
    "model.dtype",
    "model.attention_impl",
    "data.cache_dir",
    # The token store and prefetching read the same rows in the same order (bit-identical batches).
    "data.token_store",
    "data.store_dir",
    "data.store_shard_bytes",
    "data.num_workers",
    "data.prefetch",
    "eval",
)
EXTENSION_KEYS = ("num_epochs", "max_steps")  # The run's length: may change only with `extend`.


class ConfigMismatchError(ValueError):
    pass


def check_mixture(workdir: str, current_record: Optional[dict], source: str) -> None:
    """Refuses to resume on a mixture that differs from the one the run started on (a weight, a
    cap, the seed, a source added, removed or changed on disk), read from WORKDIR/mixture.json;
    a run without that file read a single file (nothing to compare) or the token store's list."""
    from distilface_jax.training import mixture

    saved_file = run_folder.path(workdir, run_folder.MIXTURE_FILE)
    saved = json.loads(saved_file.read_text())["fingerprint"] if saved_file.exists() else None
    current = json.loads(json.dumps(current_record["fingerprint"])) if current_record is not None else None
    if saved is None and current is None:
        return
    change = mixture.describe_change(saved, current)
    if change is not None:
        hint = "resume with --config.data.token_store=True" if saved is None else "restore the data it was trained on"
        raise ConfigMismatchError(
            f"{source}: the training data changed: {change}; nothing was changed. {hint} or use a new --workdir"
        )


@dataclasses.dataclass(frozen=True)
class Previous:
    """The latest committed checkpoint of a workdir: what a rerun resumes from."""

    step: int
    meta: dict  # config, encoder_config, total_steps, best_step, best_dev (as saved)
    source: str  # WORKDIR/checkpoints/<step>, for messages


def previous_run(workdir: str) -> Optional[Previous]:
    """The latest committed checkpoint and its meta, read without writing anything (a save cut
    short is an Orbax temporary folder, never listed); None for a new run."""
    from distilface_jax.training import checkpoint  # jax and Orbax: not for `--help`

    if not run_folder.path(workdir, run_folder.LATEST_DIR).exists():
        return None
    runs = checkpoint.RunCheckpoints(workdir, read_only=True)
    try:
        step = runs.latest_step()
        if step is None:
            return None
        return Previous(step, runs.read_meta(step), f"{workdir}/{run_folder.LATEST_DIR}/{step}")
    finally:
        runs.close()


def recipe_name(config: dict) -> str:
    """'SimCSE' or 'distillation from TEACHER', from a config (as saved: a dict)."""
    teacher = (config.get("distill") or {}).get("teacher")
    return f"distillation from {teacher}" if teacher else "SimCSE"


def check_config(
    previous: Previous,
    config,
    *,
    checkpoint_has_mlp: Optional[bool] = None,
    encoder_config: Optional[dict] = None,
) -> None:
    """Refuses (ConfigMismatchError) a config that contradicts the checkpoint it would resume:
    another recipe in one line, else every differing setting. Called twice: from the config
    alone before any work (a legacy key that depends on the checkpoint's model is then taken as
    the config has it), and again with the loaded model's facts (`checkpoint_has_mlp`, its HF
    `encoder_config`) before anything is written."""
    current = json.loads(config.to_json_best_effort())  # As saved: a tuple reads back as a list.
    saved = previous.meta["config"]
    if recipe_name(saved).split()[0] != recipe_name(current).split()[0]:
        raise ConfigMismatchError(
            f"{previous.source} holds a {recipe_name(saved)} run and this config is {recipe_name(current)}; "
            "nothing was changed. Use a new --workdir"
        )
    legacy = with_legacy_keys(saved, current, checkpoint_has_mlp)
    check_resumable(
        legacy,
        current,
        previous.meta["encoder_config"] if encoder_config is not None else None,
        encoder_config,
        previous.source,
    )


def _leaves(tree: dict, prefix: str = "") -> dict:
    """{"model": {"pooler": "cls"}} → {"model.pooler": "cls"} (lists are leaves)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _may_change(key: str, allowed: tuple[str, ...]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in allowed)


def check_resumable(
    saved: dict, current: dict, saved_model: Optional[dict], current_model: Optional[dict], source: str
) -> None:
    """Raises ConfigMismatchError naming every setting outside `MAY_CHANGE` that differs (the
    run's length only when `extend` is not set) and every difference of the model's shape
    (not compared when either is None). A run whose only difference is a greater length is
    told to pass --config.extend=True, in one line."""
    allowed = MAY_CHANGE + (EXTENSION_KEYS if current.get("extend") else ())
    saved_leaves, current_leaves = _leaves(saved), _leaves(current)
    changed = [
        key
        for key in sorted(set(saved_leaves) | set(current_leaves))
        if not _may_change(key, allowed) and saved_leaves.get(key) != current_leaves.get(key)
    ]
    differences = [
        f"{key}: checkpoint has {saved_leaves.get(key)!r}, config has {current_leaves.get(key)!r}" for key in changed
    ]
    if saved_model is not None and current_model is not None:
        differences += [
            f"model shape {key}: checkpoint has {saved_model.get(key)!r}, now {current_model.get(key)!r}"
            for key in sorted(set(saved_model) | set(current_model))
            if saved_model.get(key) != current_model.get(key)
        ]
    if changed and set(changed) <= set(EXTENSION_KEYS) and len(differences) == len(changed):
        lengths = ", ".join(differences)
        raise ConfigMismatchError(
            f"{source} is a run of another length ({lengths}); nothing was changed. "
            "To continue it to the new length, pass --config.extend=True"
        )
    if any(key in EXTENSION_KEYS for key in changed):
        differences.append("to continue this run to the new length, pass --config.extend=True")
    if differences:
        raise ConfigMismatchError(
            f"{source} was written by a different run; nothing was changed. "
            "Use a new --workdir, or restore these settings: " + "; ".join(differences)
        )


_DISTILL_TERMS_OFF = {
    "queue_steps": 0,
    "relational_weight": 0.0,
    "relational_temperature": 0.05,
    "hidden_weight": 0.0,
    "hidden_loss": "cosine",
    "attention_weight": 0.0,
}


def with_legacy_keys(saved: dict, current: dict, checkpoint_has_mlp: Optional[bool]) -> dict:
    """A saved run config with the keys it predates filled in as the code that wrote it behaved.

      model.mlp_init: that code kept the checkpoint's MLP head when it had one, so "pretrained"
        where the checkpoint carries one, else "random".
      loss.mlm_tie_decoder: that code tied the MLM decoder to the word embeddings (True); with
        no MLM loss there is no decoder, and the current value is taken.
      distill.keep_projection: that code always dropped a student's width map (False).
      loss.matryoshka_dims, loss.matryoshka_weights: that code trained the plain loss (None).
      distill.queue_steps, relational_*, hidden_*, attention_weight: that code had none (off).
    A pooler other than 'cls' never applies the MLP in training, so there the current value is
    taken too, as it is while `checkpoint_has_mlp` is not yet known (None: the model is not
    loaded yet). Keys already present are left as they are.
    """
    filled = json.loads(json.dumps(saved))
    model, loss = filled.setdefault("model", {}), filled.setdefault("loss", {})
    if "mlp_init" not in model:
        uses_mlp = model.get("pooler") == "cls"
        known = uses_mlp and checkpoint_has_mlp is not None
        model["mlp_init"] = (
            ("pretrained" if checkpoint_has_mlp else "random") if known else current["model"]["mlp_init"]
        )
    if "mlm_tie_decoder" not in loss:
        loss["mlm_tie_decoder"] = True if loss.get("do_mlm") else current["loss"]["mlm_tie_decoder"]
    for key in ("matryoshka_dims", "matryoshka_weights"):
        loss.setdefault(key, None)  # That code had no Matryoshka term: the plain loss.
    if "distill" in filled and "keep_projection" not in filled["distill"]:
        filled["distill"]["keep_projection"] = False  # That code dropped the width map at export.
    if "distill" in filled:  # That code had no queue and no relational, hidden or attention term.
        for key, value in _DISTILL_TERMS_OFF.items():
            filled["distill"].setdefault(key, value)
    return filled


def check_extension(config: Config, saved_total: int, total_steps: int, start: int) -> None:
    """The checkpoint planned `saved_total` steps, this config plans `total_steps`: allowed only
    with `config.extend`, and never to fewer steps than were already done."""
    if not config.extend:
        raise ConfigMismatchError(
            f"the checkpoint of step {start} was planned for {saved_total} steps, this config plans {total_steps} "
            "(did the training data change?); nothing was changed. Restore the data, or pass --config.extend=True"
        )
    if total_steps < start:
        raise ConfigMismatchError(
            f"--config.extend=True: the new length ({total_steps} steps) is below the "
            f"{start} steps already trained; nothing was changed"
        )
