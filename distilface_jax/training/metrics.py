"""Run logs: WORKDIR/metrics.jsonl (one JSON object per log) and TensorBoard events.

Only process 0 writes; other processes get a writer whose methods do nothing, so the loop
needs no `if process_index == 0` around every call.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Mapping

from distilface_jax import run_folder
from distilface_jax.run_folder import METRICS_FILE

logger = logging.getLogger(__name__)


def json_value(value: Any):
    """Strict-JSON-able: numpy/jax scalars to floats, NaN/inf (a constant prediction's
    correlation, say) to null, nested dicts and lists converted throughout."""
    if isinstance(value, Mapping):
        return {key: json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    number = float(value)
    return number if math.isfinite(number) else None


def read_metrics(workdir: str) -> list[dict]:
    path = run_folder.path(workdir, METRICS_FILE)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsWriter:
    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self.path = run_folder.path(workdir, METRICS_FILE)
        self._tensorboard = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter

                self._tensorboard = SummaryWriter(str(run_folder.path(workdir, run_folder.TENSORBOARD_DIR)))
            except Exception as error:  # Events are a convenience; metrics.jsonl is the record.
                logger.warning("TensorBoard events disabled (%s); metrics.jsonl is still written", error)
                self._tensorboard = None

    def write(self, step: int, values: Mapping[str, Any], *, prefix: str = "") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **json_value(values)}
        run_folder.append_line(self.path, json.dumps(record))
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(f"{prefix}{key}", value, step)
            self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
