"""Checkpoints: SIGTERM save-and-exit, resume on another device count, NaN safety, contradicting
configs. (Resume after a kill -9 at any moment, leftover temporary folders included, is
test_crash_consistency.py's: ~40 kill points of a real run, each rerun.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from helpers import ROOT, cpu_env, train_command

# Long enough that a signal sent at step ~45 always lands mid-run (the test asserts it did): over
# 100 steps of margin, each a logged, host-synchronised step.
TOTAL_STEPS = 160
RESUME_FLAGS = (
    f"--config.max_steps={TOTAL_STEPS}",
    "--config.log_every=1",
    "--config.checkpoint_every=10",
    "--config.eval_every=0",
    "--config.eval.final_test=False",
)


def losses_by_step(workdir) -> dict[int, float]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def final_params(workdir):
    from distilface_jax.trained_model import load_run_model

    return jax.device_get(load_run_model(str(workdir)).params)


def run_to_end(workdir, *flags, devices=1):
    result = subprocess.run(
        train_command(workdir, *RESUME_FLAGS, *flags),
        env=cpu_env(devices),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def start_and_signal(workdir, signum, at_step, devices=1):
    """Starts a run and sends `signum` once its log shows step `at_step`."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f"{workdir.name}.{signum}.log"
    with open(log, "w") as output:  # A file, not a pipe: a full pipe would stall the child.
        process = subprocess.Popen(
            train_command(workdir, *RESUME_FLAGS),
            env=cpu_env(devices),
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.time() + 240
    metrics = workdir / "metrics.jsonl"
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and max(losses_by_step(workdir), default=0) >= at_step:
            process.send_signal(signum)
            break
        time.sleep(0.01)
    process.wait(timeout=240)
    stderr = log.read_text()
    assert max(losses_by_step(workdir)) < TOTAL_STEPS, "the run finished before it could be interrupted"
    return process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_to_end(workdir)
    return workdir


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_dir):
    return losses_by_step(uninterrupted_dir), final_params(uninterrupted_dir)


def test_sigterm_saves_exits_zero_and_resumes_on_another_device_count(uninterrupted, tmp_path):
    expected_losses, expected_params = uninterrupted
    workdir = tmp_path / "run"
    status, stderr = start_and_signal(workdir, signal.SIGTERM, at_step=40, devices=8)
    assert status == 0, stderr[-2000:]
    assert "preempted: saved the checkpoint of step" in stderr
    stopped_at = int(stderr.split("checkpoint of step ")[1].split()[0])
    assert stopped_at == max(losses_by_step(workdir))
    assert str(stopped_at) in os.listdir(workdir / "checkpoints")
    run_to_end(workdir, devices=1)  # 8 simulated devices → 1.
    resumed = losses_by_step(workdir)
    assert sorted(resumed) == sorted(expected_losses)
    # Same math, other reduction order: equal to float32 rounding, not bit for bit.
    np.testing.assert_allclose(
        [resumed[s] for s in sorted(resumed)], [expected_losses[s] for s in sorted(resumed)], rtol=1e-4, atol=1e-6
    )
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), final_params(workdir), expected_params
    )


def test_contradicting_config_is_refused_and_nothing_changes(uninterrupted_dir, tmp_path):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted_dir, workdir)
    before = sorted(os.listdir(workdir / "checkpoints")), (workdir / "metrics.jsonl").read_text()
    result = subprocess.run(
        train_command(
            workdir,
            *RESUME_FLAGS,
            "--config.batch_size=16",
            "--config.model.tiny.hidden_size=48",
            # Of data.*, only the cache folder may change: not the file (even with the same lines), not the length.
            f"--config.data.train_file={workdir / 'builtin' / 'corpus.txt'}",
            "--config.data.max_seq_length=16",
        ),
        env=cpu_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "batch_size: checkpoint has 32, config has 16" in result.stderr
    assert "data.max_seq_length: checkpoint has 32, config has 16" in result.stderr
    assert "data.train_file: checkpoint has 'builtin:tiny', config has" in result.stderr
    # Refused from the config alone, before the model is built: the key that changes its shape.
    assert "model.tiny.hidden_size: checkpoint has 32, config has 48" in result.stderr
    assert (sorted(os.listdir(workdir / "checkpoints")), (workdir / "metrics.jsonl").read_text()) == before


def _rewrite_saved_configs(workdir, edit) -> None:
    """Edits the run config every checkpoint saved (meta/metadata is JSON), as older code wrote it."""
    paths = list(workdir.glob("checkpoints/*/meta/metadata")) + list(workdir.glob("best/*/meta/metadata"))
    assert paths
    for path in paths:
        meta = json.loads(path.read_text())
        edit(meta["config"])
        path.write_text(json.dumps(meta))


def test_workdir_from_before_mlp_init_resumes_and_another_head_is_refused(uninterrupted_dir, tmp_path):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted_dir, workdir)

    def forget_new_keys(config):  # What a workdir written before these keys existed holds.
        del config["model"]["mlp_init"], config["loss"]["mlm_tie_decoder"]

    _rewrite_saved_configs(workdir, forget_new_keys)
    run_to_end(workdir)  # Resumes (here: finds it finished) without complaint.
    _rewrite_saved_configs(workdir, lambda config: config["model"].__setitem__("mlp_init", "pretrained"))
    result = subprocess.run(
        train_command(workdir, *RESUME_FLAGS), env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "model.mlp_init: checkpoint has 'pretrained', config has 'random'" in result.stderr


def _poisoning_optimizer(make_optimizer, poison_count):
    """The real optimizer, whose update turns NaN at one step: a loss that goes non-finite."""
    import jax.numpy as jnp
    import optax

    def poisoned(settings, total_steps):
        optimizer, schedule = make_optimizer(settings, total_steps)

        def update(updates, state, params=None):
            inner, count = state
            updates, inner = optimizer.update(updates, inner, params)
            factor = jnp.where(count == poison_count, jnp.nan, 1.0)
            return jax.tree_util.tree_map(lambda u: u * factor, updates), (inner, count + 1)

        return optax.GradientTransformation(lambda p: (optimizer.init(p), jnp.zeros((), jnp.int32)), update), schedule

    return poisoned


@pytest.mark.parametrize(
    "poison_count, message",
    [
        (12, "loss is nan at step 14"),  # NaN params after step 13 → the loss of step 14 is NaN.
        (19, "parameters are not finite after step 20"),  # Step 20's loss is finite, but it is a save step.
    ],
)
def test_non_finite_stops_the_run_and_never_reaches_a_checkpoint(tmp_path, monkeypatch, poison_count, message):
    from distilface_jax import trained_model
    from distilface_jax.training import trainer

    from helpers import load_config

    monkeypatch.setattr(trainer, "make_optimizer", _poisoning_optimizer(trainer.make_optimizer, poison_count))
    config = load_config(ROOT / "configs" / "tiny.py")
    config.max_steps, config.log_every, config.checkpoint_every = 40, 5, 10
    config.eval_every, config.eval.final_test = 0, False
    workdir = tmp_path / "run"
    with pytest.raises(trainer.NonFiniteLossError, match=message):
        trainer.train_and_evaluate(config, str(workdir))
    assert sorted(int(s) for s in os.listdir(workdir / "checkpoints")) == [10]
    params = jax.device_get(trained_model.load_run_model(str(workdir)).params)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(params))
