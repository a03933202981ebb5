"""Multi-host, rehearsed on one machine: 2 processes × 2 devices = 1 process × 4 devices.

The 2-process run reads its batches from the token store (each host tokenizes half the shards
and reads only its rows) and the 1-process reference from memory, as before the store existed;
a third run, 1 process from the store, must repeat the reference bit for bit. One set of runs
proves both the host split and the store (the suite's time is budgeted).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np

from helpers import ROOT, cpu_env, train_command

FLAGS = (
    "--config.max_steps=12",
    "--config.log_every=1",
    "--config.checkpoint_every=6",
    "--config.eval_every=6",
    "--config.eval.final_test=False",
    "--config.model.dropout=0.1",
)
STORE = ("--config.data.token_store=True", "--config.data.store_shard_bytes=4000")  # ~20 shards


def losses(workdir, key: str = "loss") -> dict[int, float]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


def test_two_processes_match_one_process_and_resume_in_one(tmp_path):
    # The reference run and the 2-process run are independent: all start at once (their start-up
    # and compile overlap instead of adding up). The reference makes each batch in the loop from
    # arrays in memory: the path as it was before the token store and prefetching.
    single = tmp_path / "single"
    single_run = subprocess.Popen(
        train_command(single, *FLAGS, "--config.data.prefetch=0"),
        env=cpu_env(4),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stored = tmp_path / "single_store"
    stored_run = subprocess.Popen(
        train_command(stored, *FLAGS, *STORE), env=cpu_env(4), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    multi = tmp_path / "multi"
    env = dict(cpu_env(2), PYTHON=sys.executable)
    multi_run = subprocess.Popen(
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
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, single_err = single_run.communicate(timeout=300)
    assert single_run.returncode == 0, single_err[-3000:]
    _, multi_err = multi_run.communicate(timeout=300)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((multi / "logs").glob("*.log")))
    assert multi_run.returncode == 0, multi_err[-2000:] + logs
    info = json.loads((multi / "run_info.json").read_text())
    assert (info["num_processes"], info["num_devices"]) == (2, 4)
    expected = losses(single)
    assert sorted(losses(multi)) == sorted(expected) == list(range(1, 13))
    np.testing.assert_allclose([losses(multi)[s] for s in range(1, 13)], [expected[s] for s in range(1, 13)], rtol=1e-5)
    # One process from the store: the reference's trajectory bit for bit (not merely close).
    _, stored_err = stored_run.communicate(timeout=300)
    assert stored_run.returncode == 0, stored_err[-3000:].decode(errors="replace")
    for key in ("loss", "gradient_norm"):
        assert losses(stored, key) == losses(single, key), key
    assert all(wait >= 0 for wait in losses(stored, "data_wait_ms").values())
    # Each host tokenized its half of the one store's shards and read only its rows of each batch.
    (store,) = (multi / "cache" / "store").iterdir()
    assert len(list(store.glob("shard-*.json"))) == len(json.loads((store / "plan.json").read_text())["shards"]) > 10
    for index in (0, 1):
        log = (multi / "logs" / f"process_{index}.log").read_text()
        assert re.findall(rf"token store: process {index} read (\d+) rows", log) == [str(12 * 32 // 2)]

    # The 2-process checkpoint of step 6 resumes in one process with 4 devices and finishes the run
    # (reading its batches from memory now: the token store may be switched off on resume).
    shutil.rmtree(multi / "checkpoints" / "12")
    result = subprocess.run(
        train_command(multi, *FLAGS), env=cpu_env(4), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = losses(multi)
    assert json.loads((multi / "run_info.json").read_text())["resumed_from_step"] == 6
    np.testing.assert_allclose([resumed[s] for s in range(1, 13)], [expected[s] for s in range(1, 13)], rtol=1e-5)
