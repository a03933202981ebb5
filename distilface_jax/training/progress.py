"""The training loop's progress bar: advances per step as steps finish, without waiting for them.

`dispatched(step, outputs)` records a step the host has handed to the device; `poll()` moves
the bar over every recorded step whose outputs are already computed (`jax.Array.is_ready`,
which never blocks), so the bar counts finished steps while the loop keeps dispatching ahead
(a per-step `block_until_ready` would nearly double a small step's time on a GPU). At a log
the loop fetches the metrics anyway, and `finished(step)` catches the bar up. The rate shown
is the loop's own sentences/s over training time only (no compile, no evaluation), not tqdm's
wall-clock rate.
"""

from __future__ import annotations

import collections
import sys

import jax
from tqdm import tqdm


class StepProgress:
    def __init__(self, start: int, total: int, *, enabled: bool = True, bar=None):
        if bar is None:
            bar = tqdm(
                total=total,
                initial=start,
                disable=not enabled,
                unit="step",
                dynamic_ncols=True,
                bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )
        self.bar = bar
        self.done = start
        self._in_flight: collections.deque = collections.deque()

    def dispatched(self, step: int, outputs) -> None:
        """Step `step` (the count of steps after it, 1-based) was dispatched; `outputs` are its arrays."""
        self._in_flight.append((step, outputs))
        self.poll()

    def poll(self) -> None:
        ready = self.done
        while self._in_flight and _all_ready(self._in_flight[0][1]):
            ready = self._in_flight.popleft()[0]
        self._advance(ready)

    def finished(self, step: int) -> None:
        """Everything up to `step` is known done (its metrics were fetched)."""
        while self._in_flight and self._in_flight[0][0] <= step:
            self._in_flight.popleft()
        self._advance(step)

    def show(self, loss: float, sentences_per_second) -> None:
        rate = f", {sentences_per_second:.0f} sentences/s" if sentences_per_second else ""
        self.bar.set_postfix_str(f"loss {loss:.4f}{rate}", refresh=False)

    def write(self, line: str) -> None:
        """A line on stderr above the bar (the bar is redrawn below it); nothing on other processes."""
        if not self.bar.disable:
            self.bar.write(line, file=sys.stderr)

    def _advance(self, step: int) -> None:
        if step > self.done:
            self.bar.update(step - self.done)
            self.done = step

    def close(self) -> None:
        self.bar.close()


def _all_ready(outputs) -> bool:
    return all(getattr(leaf, "is_ready", lambda: True)() for leaf in jax.tree_util.tree_leaves(outputs))
