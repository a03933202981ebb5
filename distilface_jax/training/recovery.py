"""Crash consistency: the order in which a run writes its workdir, and what a rerun repairs.

A run writes in this order; every write is atomic (a temporary name, then a rename) or an
append whose torn tail is recognisable:

    start   checks, all read-only (training/resume.py); then run_info.json; for a new run
            model/, config.json, distill.json; token and teacher caches (one file per key)
    step S  metrics.jsonl rows of step S (appended)
            best/S, when S has the best dev score so far (synchronous: Orbax writes a
            temporary folder and renames it)
            checkpoints/S (asynchronous; its meta names the best step and score): the commit
            point of everything up to step S
            best steps older than the one a *committed* checkpoint names (checkpoint.prune_best)
    end     sts_test.json, then its metrics.jsonl row

So a kill at any instant leaves the latest committed checkpoint S (or none) and, besides it,
at most: metrics.jsonl rows past S or a torn last line, best steps past S, best steps older
than the one S names, Orbax temporary folders, and `.NAME.tmp-*` files of our own writes.
`repair` removes exactly these, before the rerun writes anything else, and the caller prints
one line saying what it removed; the rerun then goes on from S as the uninterrupted run did.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Optional

from distilface_jax import run_folder
from distilface_jax.run_folder import BEST_DIR, LATEST_DIR, METRICS_FILE

_ORBAX_TEMPORARY = ".orbax-checkpoint-tmp"
# `run_folder.atomic_file`/`atomic_directory` stage NAME as ".NAME.tmp-XXXXXXXX" beside it.
_OUR_TEMPORARY = re.compile(r"^\..+\.tmp-[A-Za-z0-9_]+$")


def committed_step(workdir: str) -> Optional[int]:
    """The newest committed checkpoint step, read from the folder names alone (no Orbax call,
    no lock: safe inside a signal handler). A save in progress has a temporary name."""
    try:
        names = [item.name for item in run_folder.path(workdir, LATEST_DIR).iterdir()]
    except OSError:
        return None
    return max((int(name) for name in names if name.isdigit()), default=None)


def unfinished_saves(workdir: str) -> list[str]:
    """Orbax temporary folders (saves cut short) in checkpoints/ and best/. Orbax deletes them
    when it opens the folders for writing, silently: counted first, to be reported."""
    if run_folder.is_remote(workdir):
        return []
    found = []
    for folder in (LATEST_DIR, BEST_DIR):
        path = os.path.join(workdir, folder)
        if os.path.isdir(path):
            found += [f"{folder}/{name}" for name in sorted(os.listdir(path)) if _ORBAX_TEMPORARY in name]
    return found


def remove_stray_temporaries(workdir: str, token_cache: Optional[str]) -> list[str]:
    """Deletes `.NAME.tmp-*` files and folders our atomic writes left in the workdir, model/ and
    the workdir's own token cache (`token_cache`, when it is WORKDIR/cache; a cache folder of the
    user's may be shared with a run writing it now) when killed before their rename. Only for a
    single-process run: in a multi-process run another process may be staging its copy of
    builtin/ at this moment."""
    if run_folder.is_remote(workdir):
        return []
    removed = []
    own_cache = [token_cache] if token_cache == run_folder.default_cache_dir(workdir) else []
    for folder in (workdir, os.path.join(workdir, run_folder.MODEL_DIR), *own_cache):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not _OUR_TEMPORARY.match(name):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            removed.append(os.path.relpath(path, workdir))
    return removed


def rewind_metrics(workdir: str, step: int) -> tuple[int, bool]:
    """Keeps the metrics.jsonl rows of steps <= `step` (the resumed checkpoint), so the log reads
    as one uninterrupted run and never holds a step twice; drops a torn last line (a kill in
    the middle of an append). Returns (rows dropped, whether a torn line was dropped)."""
    path = run_folder.path(workdir, METRICS_FILE)
    if not path.exists():
        return 0, False
    kept, dropped, torn = [], 0, False
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if index != len(lines) - 1:
                raise ValueError(f"{path}: line {index + 1} is not JSON (only a last line can be cut short)") from None
            torn = True
            continue
        if record.get("step", 0) <= step:
            kept.append(record)
        else:
            dropped += 1
    if dropped or torn:
        run_folder.write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
    return dropped, torn


def recorded_best(previous, best_steps) -> Optional[int]:
    """The best step the resumed checkpoint names (its meta's `best_step`; a checkpoint without
    the key: the newest best step at or below it). None for a new run."""
    if previous is None:
        return None
    if "best_step" in previous.meta:
        return previous.meta["best_step"]
    return max((step for step in best_steps if step <= previous.step), default=None)


def repair_best(runs, start: Optional[int], recorded_best: Optional[int]) -> list[int]:
    """Deletes every best/ step except the one the resumed checkpoint names (`recorded_best`):
    later ones were written after it (the rerun writes them again), earlier ones are superseded.
    With no checkpoint (`start` None) every best step is from a run killed before its first
    checkpoint. Returns the deleted steps. Every process calls it (Orbax deletes collectively)."""
    deleted = [step for step in runs.best.all_steps() if start is None or step != recorded_best]
    for step in deleted:
        runs.best.delete(step)
    return deleted


def _steps(steps: list[int]) -> str:
    return f"step{'s' if len(steps) != 1 else ''} {', '.join(map(str, steps))}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def describe(
    workdir: str,
    start: Optional[int],
    *,
    best_deleted: list[int],
    missing_best: Optional[int],
    metrics_dropped: int,
    torn_line: bool,
    unfinished: list[str],
    temporaries: list[str],
) -> Optional[str]:
    """The one line a rerun prints about what it repaired: None when there was nothing."""
    resumed = f"resuming from step {start}" if start is not None else "no checkpoint was committed: starting at step 0"
    later = [step for step in best_deleted if start is None or step > start]
    older = [step for step in best_deleted if start is not None and step <= start]
    parts = []
    if later:
        parts.append(f"removed best/ {_steps(later)}, written after {'that checkpoint' if start is not None else 'it'}")
    if older:
        parts.append(f"removed superseded best/ {_steps(older)}")
    dropped = [_count(metrics_dropped, "metrics.jsonl row") + f" past step {start or 0}"] if metrics_dropped else []
    dropped += ["a half-written last metrics.jsonl line"] if torn_line else []
    if dropped:
        parts.append("dropped " + " and ".join(dropped))
    if unfinished:
        parts.append(f"removed {_count(len(unfinished), 'unfinished checkpoint save')}")
    if temporaries:
        parts.append(f"removed {_count(len(temporaries), 'half-written file')} ({', '.join(temporaries)})")
    if missing_best is not None:  # A workdir of older code, which could delete it too early.
        parts.append(f"best/{missing_best}, which the checkpoint names, is missing: the best dev score starts anew")
    if not parts:
        return None
    return f"{workdir} was interrupted ({resumed}): " + "; ".join(parts)
