"""Orbax checkpoints of a training run: the latest N for resuming, the best by STS-B dev apart.

    WORKDIR/checkpoints/<step>/{params, opt_state, progress, meta}   async, keep `keep_checkpoints`
    WORKDIR/best/<step>/{params, meta}                                the best dev checkpoint

Items are separate so that evaluation and export restore `params` alone, with no optimizer to
rebuild. Orbax writes each step to a temporary folder and renames it when complete, so a save
killed half-way is never listed as a step; `cleanup_tmp_directories` removes such leftovers.

A new best is written (synchronously) before the checkpoint of its step, whose meta records it;
the previous best is deleted only once a *committed* checkpoint records its successor
(`prune_best`). So at every instant best/ holds the best step that the latest committed
checkpoint names, whatever a kill interrupts (training/recovery.py lists the write order).
The newest step in best/ is always the best dev score written so far, which is what
`--step best` reads.
Restores take the *current* run's shardings (abstract arrays), so a checkpoint written on 8
devices restores on 1 and vice versa.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from distilface_jax import run_folder
from distilface_jax.run_folder import BEST_DIR, LATEST_DIR


def _manager(
    directory: str, *, keep: Optional[int], asynchronous: bool, items: tuple[str, ...], read_only: bool = False
) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep,
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=asynchronous,
    )
    return ocp.CheckpointManager(directory, options=options, item_names=items)


def abstract_like(tree, sharding) -> Any:
    """ShapeDtypeStructs of `tree` laid out with `sharding`: the restore target."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


class RunCheckpoints:
    """Save and restore the checkpoints of one workdir (every process calls every method)."""

    def __init__(self, workdir: str, *, keep: int = 2, read_only: bool = False):
        self.workdir = run_folder.absolute(workdir)
        self.latest = _manager(
            run_folder.join(self.workdir, LATEST_DIR),
            keep=keep,
            asynchronous=not read_only,
            items=("params", "opt_state", "progress", "meta"),
            read_only=read_only,
        )
        self.best = _manager(
            run_folder.join(self.workdir, BEST_DIR),
            keep=None,  # Pruned by `prune_best`, only once a committed checkpoint names the newer one.
            asynchronous=False,
            items=("params", "meta"),
            read_only=read_only,
        )

    # -- saving ---------------------------------------------------------------------------
    def save(self, state, meta: dict) -> None:
        """Asynchronous: returns once the arrays are copied off the device. The previous save is
        committed first (Orbax waits for it anyway), which lets the best steps it supersedes go."""
        step = int(jax.device_get(state.step))
        self.latest.wait_until_finished()
        self.prune_best()
        self.latest.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                opt_state=ocp.args.StandardSave(state.opt_state),
                progress=ocp.args.StandardSave({"step": state.step, "rng": state.rng}),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def save_best(self, step: int, params, meta: dict) -> None:
        self.best.save(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def wait(self) -> None:
        """Every save committed; best steps no committed checkpoint needs are gone."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()
        self.prune_best()

    def prune_best(self) -> list[int]:
        """Deletes the best steps older than the newest one at or below the latest *committed*
        checkpoint: that one is what the checkpoint's meta names, later ones may still be
        named by the next checkpoint. Returns the deleted steps."""
        committed, steps = self.latest.latest_step(), self.best.all_steps()
        kept = max((step for step in steps if committed is not None and step <= committed), default=None)
        stale = [step for step in steps if kept is not None and step < kept]
        for step in stale:
            self.best.delete(step)
        return stale

    def close(self) -> None:
        self.latest.close()
        self.best.close()

    # -- reading --------------------------------------------------------------------------
    def latest_step(self) -> Optional[int]:
        return self.latest.latest_step()

    def best_step(self) -> Optional[int]:
        return self.best.latest_step()

    def read_meta(self, step: int, *, best: bool = False) -> dict:
        manager = self.best if best else self.latest
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_state(self, step: int, abstract_state):
        """The full train state at `step`, laid out as `abstract_state` says."""
        restored = self.latest.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state.params),
                opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
                progress=ocp.args.StandardRestore({"step": abstract_state.step, "rng": abstract_state.rng}),
            ),
        )
        progress = restored["progress"]
        return abstract_state.replace(
            step=progress["step"], rng=progress["rng"], params=restored["params"], opt_state=restored["opt_state"]
        )

    def restore_params(self, step: int, abstract_params, *, best: bool = False):
        manager = self.best if best else self.latest
        return manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))[
            "params"
        ]


def resolve_step(checkpoints: RunCheckpoints, step: Optional[str]) -> tuple[int, bool]:
    """'best', a number, or None (the latest) → (step, is_best). Errors name what exists."""
    if step == "best":
        best = checkpoints.best_step()
        if best is None:
            raise FileNotFoundError(f"{checkpoints.workdir}: no best checkpoint (was eval_every 0?)")
        return best, True
    available = list(checkpoints.latest.all_steps())
    if step is None:
        if not available:
            raise FileNotFoundError(f"{checkpoints.workdir}: no checkpoint in {LATEST_DIR}/")
        return max(available), False
    try:
        number = int(step)
    except ValueError as error:
        raise ValueError(f"--step must be a number or 'best', got {step!r}") from error
    if number not in available:
        best = checkpoints.best_step()
        if best == number:
            return number, True
        raise FileNotFoundError(f"{checkpoints.workdir}: no checkpoint at step {number}; have {sorted(available)}")
    return number, False
