"""The training loop's progress bar counts steps the device has finished, not steps the host has
dispatched: `train_and_evaluate` on the tiny config (a tiny HF folder as the model), with a
stand-in step whose outputs are finished only when the host waits for them (as a device running
behind the host would be)."""

from __future__ import annotations

import numpy as np

from distilface_jax.training import progress, simcse, trainer

from helpers import ROOT, WORDS, load_config

STEPS, LOG_EVERY = 6, 3


class _Device:
    """Runs steps in order; a step is finished once the host has waited for it or a later one."""

    def __init__(self):
        self.dispatched = self.finished = 0


class _StepOutput:
    """A step's metric, on the stand-in device: `is_ready` never waits; fetching it
    (`jax.device_get` → `__array__`) or `jax.block_until_ready` waits, so the step is finished."""

    def __init__(self, device: _Device, step: int):
        self.device, self.step = device, step

    def is_ready(self) -> bool:
        return self.step <= self.device.finished

    def block_until_ready(self):
        self.device.finished = max(self.device.finished, self.step)
        return self

    def __array__(self, dtype=None, copy=None):
        self.block_until_ready()
        return np.asarray(1.0, np.float32)


class _Bar:
    """tqdm's surface as StepProgress uses it; each update records (bar position, steps finished)."""

    disable = False

    def __init__(self, device: _Device):
        self.device, self.n, self.updates = device, 0, []

    def update(self, count):
        self.n += count
        self.updates.append((self.n, self.device.finished))

    def set_postfix_str(self, text, refresh=True):
        pass

    def write(self, line, file=None):
        pass

    def close(self):
        pass


def test_training_bar_advances_only_over_finished_steps(tiny_distilbert_dir, tmp_path, monkeypatch):
    device = _Device()
    bar = _Bar(device)

    def stand_in_step(*args, **kwargs):
        def step(state, batch):
            device.dispatched += 1
            output = _StepOutput(device, device.dispatched)
            return state, {"loss": output, "gradient_norm": output, "learning_rate": output}

        return step

    monkeypatch.setattr(simcse, "build_step", stand_in_step)
    monkeypatch.setattr(
        trainer,
        "StepProgress",
        lambda start, total, enabled=True: progress.StepProgress(start, total, enabled=enabled, bar=bar),
    )
    config = load_config(ROOT / "configs" / "tiny.py")
    config.model.name_or_path = str(tiny_distilbert_dir)  # Loaded, not initialised op by op (seconds).
    config.data.train_file = str(tmp_path / "corpus.txt")
    (tmp_path / "corpus.txt").write_text("\n".join(" ".join(WORDS[i : i + 6]) for i in range(64)) + "\n")
    config.eval.sts_dir = str(tmp_path / "no_evaluation")
    config.max_steps, config.log_every, config.checkpoint_every = STEPS, LOG_EVERY, STEPS
    config.eval_every, config.eval.final_test = 0, False
    outcome = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert outcome.final_step == STEPS and device.dispatched == STEPS
    # Never ahead of the device; and it does move as steps finish: at the latest when a log
    # fetches the metrics (steps 3 and 6), not only when the bar is closed. (Here it reads
    # [(1, 1), (3, 3), (6, 6)]: step 1 is waited for, to keep compile time out of the throughput.)
    assert all(position <= finished for position, finished in bar.updates), bar.updates
    assert {LOG_EVERY, STEPS} <= {position for position, _ in bar.updates} and bar.n == STEPS, bar.updates
