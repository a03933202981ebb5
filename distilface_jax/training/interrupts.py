"""SIGTERM and Ctrl-C during training: stop at the next step boundary, with the state saved.

SIGTERM (a preemption notice, `kill`) and a first SIGINT (Ctrl-C) only set a flag; the loop
saves a checkpoint at the next step boundary and returns. A second SIGINT means "now": it
raises KeyboardInterrupt at once, losing the steps since the last checkpoint.
"""

from __future__ import annotations

import signal
import sys


class StopSignals:
    """Installed for the duration of the loop (`restore()` puts the previous handlers back)."""

    def __init__(self):
        self.received: int | None = None  # the first signal's number
        self._previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGTERM, signal.SIGINT)}

    @property
    def interrupted(self) -> bool:
        """True when the stop came from Ctrl-C (exit status 130), not SIGTERM (exit 0)."""
        return self.received == signal.SIGINT

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.received is not None:
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
