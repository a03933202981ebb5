"""SIGTERM and Ctrl-C during training: stop at the next step boundary, with the state saved.

SIGTERM (a preemption notice, `kill`) and a first SIGINT (Ctrl-C) only set a flag; the loop
saves a checkpoint at the next step boundary and returns. A second SIGINT means "now": the
trainer's `abort` prints one line naming the step a rerun resumes from and ends the process at
once (`os._exit`), like a kill: the workdir is consistent at every instant (training/recovery.py),
and no background save thread is left to print tracebacks at interpreter shutdown.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable, Optional

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd program.


class StopSignals:
    """Installed for the duration of the loop (`restore()` puts the previous handlers back).
    `abort`: called on a second Ctrl-C; without one, KeyboardInterrupt is raised."""

    def __init__(self, abort: Optional[Callable[[], None]] = None):
        self.received: int | None = None  # the first signal's number
        self._abort = abort
        self._previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGTERM, signal.SIGINT)}

    @property
    def interrupted(self) -> bool:
        """True when the stop came from Ctrl-C (exit status 130), not SIGTERM (exit 0)."""
        return self.received == signal.SIGINT

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.received is not None:
            if self._abort is not None:
                self._abort()
            raise KeyboardInterrupt  # Second request: abort now, unsaved steps are lost.
        if self.received is None:
            self.received = signum
            if signum == signal.SIGINT:
                print(
                    "\ninterrupt: saving at the end of this step (Ctrl-C again to abort without saving)",
                    file=sys.stderr,
                    flush=True,
                )

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def exit_now(message: str, status: int) -> None:
    """Prints `message` and ends the process at once: no cleanup, no waiting for threads."""
    print(f"\n{message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)
