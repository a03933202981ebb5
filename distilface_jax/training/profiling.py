"""`config.profile_steps = "START:STOP"`: a jax.profiler trace of training steps START..STOP-1.

The trace goes to WORKDIR/profile (TensorBoard's profile plugin or Perfetto read it), and
each step runs under a `StepTraceAnnotation`, so the viewer splits the timeline by step.
Off by default: tracing costs host time and disk. Tracing changes nothing that is computed.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Optional

import jax

from distilface_jax.config.keys import parse_window  # noqa: F401  (the key's syntax lives with its declaration)

logger = logging.getLogger(__name__)


class StepProfiler:
    """Starts the trace before step START, stops it after step STOP-1 has finished on the device."""

    def __init__(self, window: Optional[tuple[int, int]], log_dir: str, enabled: bool = True):
        self.window, self.log_dir = (window if enabled else None), log_dir
        self.active = self.finished = False

    def step(self, step: int):
        """Context for one step (0-based): the annotation when the window is open, else nothing."""
        if self.window is None:
            return contextlib.nullcontext()
        # A run resumed inside the window traces what is left of it.
        if self.window[0] <= step < self.window[1] and not (self.active or self.finished):
            jax.profiler.start_trace(self.log_dir)
            self.active = True
        if not self.active:
            return contextlib.nullcontext()
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def after_step(self, step: int, outputs) -> None:
        if self.active and step + 1 >= self.window[1]:
            self.stop(outputs)

    def stop(self, outputs=None) -> None:
        if not self.active:
            return
        if outputs is not None:
            jax.block_until_ready(outputs)  # The trace must hold the device work, not only its dispatch.
        jax.profiler.stop_trace()
        self.active, self.finished = False, True
        logger.info("profile of steps %d:%d written to %s", self.window[0], self.window[1], self.log_dir)
