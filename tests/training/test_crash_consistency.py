"""A kill at any moment never wedges a SimCSE run: for each of ~40 kill points of a real `train`
run (its own files, the token cache, inside Orbax's checkpoint and best saves, half-appended
metrics lines, deletes of old steps, the final test) the folder a `kill -9` leaves there is
rerun, and every rerun completes with the parameters, sts_test.json, metrics.jsonl rows and best
step of the uninterrupted run (fault_injection.py: one run frozen at each write, one process
rerunning every kill point)."""

from __future__ import annotations

import re

import fault_injection
from helpers import ROOT

# Four steps, a dev evaluation and a checkpoint after each (seed 0: best at steps 1 and 2, lower after;
# the curve depends on the step count, which plans the learning-rate schedule).
SIMCSE = [
    f"--config={ROOT / 'configs' / 'tiny.py'}",
    "--config.max_steps=4",
    "--config.log_every=1",
    "--config.eval_every=1",
    "--config.checkpoint_every=1",
    "--config.keep_checkpoints=1",
    "--config.batch_size=8",
]


def test_simcse_run_killed_anywhere_resumes_to_the_uninterrupted_result(tmp_path):
    workdir = tmp_path / "run"
    env = fault_injection.environment(tmp_path / "compiled", ROOT)
    points, reference, report = fault_injection.kill_points_and_reruns(
        tmp_path, [workdir], [*SIMCSE, f"--workdir={workdir}"], SIMCSE, env, ROOT
    )
    events = [event for event, _ in points]
    assert len(events) >= 30
    assert {"0:best", "0:checkpoints"} <= {e.split()[1].split("/")[0] for e in events if ".orbax-tmp" in e}
    assert any(e.startswith("append-half 0:metrics.jsonl") for e in events)
    assert any(re.match(r"delete 0:best/\d+$", e) for e in events)  # a superseded best, pruned
    fault_injection.check_best_moves_and_is_remembered(reference)
    fault_injection.check_every_rerun(report, reference, total_steps=4)
    repairs = [line for result in report for line in result["log"] if " was interrupted (" in line]
    for repair in ("removed best/", "removed superseded best/", "half-written last metrics.jsonl line"):
        assert any(repair in line for line in repairs), (repair, repairs)
    assert any("unfinished checkpoint save" in line for line in repairs), repairs
    print(f"simcse: {len(points)} kill points, reruns {sum(r['seconds'] for r in report):.0f} s")
