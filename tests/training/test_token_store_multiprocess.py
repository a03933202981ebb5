"""Training from the token store, end to end: the same run as today's in-memory path, in one
process or split over two hosts that tokenize half the shards each and read only their rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np

from helpers import ROOT, cpu_env, train_command

STEPS = 8
FLAGS = (
    f"--config.max_steps={STEPS}",
    "--config.log_every=1",
    f"--config.checkpoint_every={STEPS}",
    "--config.eval_every=0",
    "--config.eval.final_test=False",
)
STORE = ("--config.data.token_store=True", "--config.data.store_shard_bytes=4000")  # ~20 shards


def _records(workdir) -> dict[int, dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if "train/loss" in r or "loss" in r}


def _values(workdir, key: str) -> list[float]:
    records = _records(workdir)
    assert sorted(records) == list(range(1, STEPS + 1))
    return [records[s].get(key, records[s].get(f"train/{key}")) for s in range(1, STEPS + 1)]


def test_store_runs_equal_the_in_memory_run_in_one_and_two_processes(tmp_path):
    def start(command, env):
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    memory, single, multi = tmp_path / "memory", tmp_path / "store_1x4", tmp_path / "store_2x2"
    runs = {
        # Today's path exactly: arrays in memory, each batch made in the loop.
        memory: start(train_command(memory, *FLAGS, "--config.data.prefetch=0"), cpu_env(4)),
        single: start(train_command(single, *FLAGS, *STORE), cpu_env(4)),
        multi: start(
            [
                "bash",
                str(ROOT / "launch" / "local_multiprocess.sh"),
                "--num-processes",
                "2",
                "--devices-per-process",
                "2",
                "--config",
                str(ROOT / "configs" / "tiny.py"),
                "--workdir",
                str(multi),
                *FLAGS,
                *STORE,
            ],
            dict(cpu_env(2), PYTHON=sys.executable),
        ),
    }
    for workdir, run in runs.items():
        _, err = run.communicate(timeout=300)
        logs = (
            "".join(p.read_text()[-2000:] for p in sorted((workdir / "logs").glob("*.log")))
            if run.args[0] == "bash"
            else ""
        )
        assert run.returncode == 0, err[-3000:] + logs

    # One process: bit-identical trajectory (not merely close).
    for key in ("loss", "gradient_norm"):
        assert _values(single, key) == _values(memory, key), key
    # Two hosts: the same global batches (cross-host reductions may round differently).
    np.testing.assert_allclose(_values(multi, "loss"), _values(memory, "loss"), rtol=1e-5)
    assert all(w is not None and w >= 0 for w in _values(single, "data_wait_ms"))

    # Each host tokenized its half of the shards (one store, built once) and read only its rows.
    (store,) = (multi / "cache" / "store").iterdir()
    assert len(list(store.glob("shard-*.json"))) == len(json.loads((store / "plan.json").read_text())["shards"]) > 10
    for index in (0, 1):
        log = (multi / "logs" / f"process_{index}.log").read_text()
        (rows,) = re.findall(rf"token store: process {index} read (\d+) rows", log)
        assert int(rows) == STEPS * 32 // 2  # batch 32 over 2 hosts, 8 steps
