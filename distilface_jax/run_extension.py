"""Continuing a finished (or running) run to a greater length: `--config.extend=True`.

A run's length (`max_steps`, or `num_epochs` x steps per epoch) plans its learning-rate
schedule, so resuming with another length would silently train a different run: without
`extend` it is refused like any other run-defining change. With `extend`, training continues
from the latest checkpoint and the schedule is re-planned to the new total: from that step on
the learning rate is the one a run planned for the new total would have had (linear decay
from `learning_rate` to 0 at the new last step). Each extension is recorded in run_info.json
under "extensions" (from which step, the old and the new total).
"""

from __future__ import annotations

import json
from typing import Optional

from distilface_jax import workdir_files

EXTENSION_KEYS = ("num_epochs", "max_steps")


def check_extension(config, saved_total: int, total_steps: int, start: int) -> None:
    """The checkpoint planned `saved_total` steps, this config plans `total_steps`: allowed only
    with `config.extend`, and never to fewer steps than were already done."""
    from distilface_jax.trainer import ConfigMismatchError
    if not config.extend:
        raise ConfigMismatchError(
            f"the checkpoint of step {start} was planned for {saved_total} steps, this config plans {total_steps} "
            "(did the training data change?); nothing was changed. Restore the data, or pass --config.extend=True")
    if total_steps < start:
        raise ConfigMismatchError(f"--config.extend=True: the new length ({total_steps} steps) is below the "
                                  f"{start} steps already trained; nothing was changed")


def record_extension(info: dict, workdir: str, start: int, saved_total: Optional[int], total_steps: int) -> None:
    """Adds the run's extensions (earlier ones from the previous run_info.json, and this one) to `info`."""
    previous = workdir_files.path(workdir, "run_info.json")
    extensions = []
    if start and previous.exists():
        try:
            extensions = list(json.loads(previous.read_text()).get("extensions", []))
        except (ValueError, OSError):
            extensions = []
    extensions = [e for e in extensions if e.get("from_step", 0) < start or
                  (e.get("from_step") == start and saved_total is not None and saved_total != total_steps)]
    if saved_total is not None and saved_total != total_steps and not any(
            e.get("from_step") == start and e.get("total_steps") == total_steps for e in extensions):
        extensions.append({"from_step": start, "previous_total_steps": saved_total, "total_steps": total_steps})
    if extensions:
        info["extensions"] = extensions
