"""Kill points for the crash-consistency tests: one real `train` run frozen at each write it makes.

A kill -9 leaves the files exactly as they are at that instant, so a run need not die to show
what a kill leaves: `python fault_injection.py freeze ROOT... -- TRAIN_ARGS` runs
`python -m distilface_jax.train TRAIN_ARGS` with every file-system change under the ROOTs hooked
(rename/replace, delete, mkdir, a file opened for writing, an append written in two halves).
Before each change the hooked thread reports it on a pipe and stops the whole process (SIGSTOP:
every thread, Orbax's background saves and TensorStore's writers included), and waits for the
test's go-ahead. `Victim` copies the ROOTs at the events `is_kill_point` picks, then lets the
process go on (SIGCONT): each copy is what a kill at that instant leaves behind, and the run,
never disturbed, is the uninterrupted reference.

`python fault_injection.py rerun ...` then reruns every kill point in one process: the ROOTs put
back as the kill left them, `train_and_evaluate`, and what the rerun ended with (`ending`), to be
compared with the uninterrupted run's. `kill_points_and_reruns` does both; `check_every_rerun`
compares.
"""

from __future__ import annotations

import builtins
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional

_TEMPORARY = [
    (re.compile(r"\.orbax-checkpoint-tmp(-\d+)?"), ".orbax-tmp"),
    (re.compile(r"\.tmp-[A-Za-z0-9_]+"), ".tmp"),
]


def normalise(path: str, roots: list[str]) -> Optional[str]:
    """'ROOTn/relative/path' with temporary-name suffixes made stable; None outside the roots."""
    path = os.path.abspath(os.fspath(path))
    for index, root in enumerate(roots):
        if path == root or path.startswith(root + os.sep):
            relative = os.path.relpath(path, root)
            for pattern, stable in _TEMPORARY:
                relative = pattern.sub(stable, relative)
            return f"{index}:{relative}"
    return None


# ----------------------------------------------------------------------------- in the frozen process


def _install(roots: list[str], report_fd: int, ack_fd: int) -> None:
    lock = threading.RLock()
    write, kill, read = os.write, os.kill, os.read

    def event(kind: str, *paths) -> None:
        names = [normalise(p, roots) for p in paths if isinstance(p, (str, bytes, os.PathLike))]
        names = [name for name in names if name is not None]
        if not names:
            return
        with lock:  # One event at a time: the next hooked thread waits until this one is let go.
            write(report_fd, f"{kind} {' '.join(names)}\n".encode())
            # A stop sent to its own process reaches this thread only later (at a return from the
            # kernel): it must not go on before the test has seen the stop and let it go.
            kill(os.getpid(), signal.SIGSTOP)
            read(ack_fd, 1)

    def hooked(kind: str, function: Callable, count: int = 1) -> Callable:
        def wrapper(*args, **kwargs):
            event(kind, *args[:count])
            return function(*args, **kwargs)

        return wrapper

    os.rename = hooked("rename", os.rename, 2)
    os.replace = hooked("rename", os.replace, 2)
    os.unlink = hooked("delete", os.unlink)
    os.remove = hooked("delete", os.remove)
    os.rmdir = hooked("delete", os.rmdir)
    shutil.rmtree = hooked("delete", shutil.rmtree)

    real_mkdir, real_os_open, real_open = os.mkdir, os.open, io.open

    def mkdir(path, *args, **kwargs):
        if not os.path.exists(path):
            event("mkdir", path)
        return real_mkdir(path, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND):
            event("create", path)
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        writing = isinstance(file, (str, bytes, os.PathLike)) and any(flag in mode for flag in "wax+")
        if writing:
            event("create", file)
        handle = real_open(file, mode, *args, **kwargs)
        if writing and "a" in mode and normalise(file, roots):
            return _TornAppend(handle, lambda: event("append-half", file))
        return handle

    os.mkdir = mkdir
    os.open = os_open
    io.open = builtins.open = open_


class _TornAppend:
    """An appended write lands in two halves, frozen in between: a kill that tears a line."""

    def __init__(self, handle, between: Callable[[], None]):
        self._handle, self._between = handle, between

    def write(self, data):
        half = len(data) // 2
        self._handle.write(data[:half])
        self._handle.flush()
        self._between()
        return half + self._handle.write(data[half:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def _freeze(argv: list[str]) -> None:
    """`freeze ROOT... -- TRAIN_ARGS`: the run, hooked."""
    split = argv.index("--")
    roots, arguments = [os.path.abspath(root) for root in argv[:split]], argv[split + 1 :]
    _install(roots, int(os.environ["FAULT_REPORT_FD"]), int(os.environ["FAULT_ACK_FD"]))
    import runpy

    sys.argv = ["distilface_jax.train", *arguments]
    runpy.run_module("distilface_jax.train", run_name="__main__", alter_sys=True)


# ----------------------------------------------------------------------------- the reruns (one process)


def _rerun(argv: list[str]) -> None:
    """`rerun POINTS_JSON REPORT_JSON ROOT... -- CONFIG_FLAGS`: for each kill point, the roots put
    back as the kill left them, then `train_and_evaluate` in this process; what each rerun ended
    with goes to the report. The step function is built once (see `_build_steps_once`)."""
    import json
    import logging
    import time
    import traceback

    from helpers import config_from_flags

    split = argv.index("--")
    points_file, report_file, *roots = argv[:split]
    config = config_from_flags(argv[split + 1 :])
    roots = [Path(root) for root in roots]
    from distilface_jax import recipes
    from distilface_jax.cli.policy import configure_output
    from distilface_jax.training import trainer

    configure_output(0)
    _build_steps_once()
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("distilface_jax").addHandler(handler)
    report = []
    for event, snapshot in json.loads(Path(points_file).read_text()):
        restore(Path(snapshot), roots)
        lines.clear()
        start = time.perf_counter()
        try:
            outcome = trainer.train_and_evaluate(config, str(roots[0]), recipes.for_config(config))
            result = {"final_step": outcome.final_step, **ending(roots[0])}
        except BaseException:  # Any failure is the test's finding, reported with the rest.
            result = {"error": traceback.format_exc()}
        report.append({"event": event, "seconds": time.perf_counter() - start, "log": list(lines), **result})
    Path(report_file).write_text(json.dumps(report, indent=1))


def _build_steps_once() -> None:
    """Every rerun builds the same jitted step (a pure function of the config): built once and
    reused, the reruns skip re-tracing it; everything the crash consistency rests on still runs."""
    from distilface_jax.distill import run as distill_run
    from distilface_jax.training import simcse

    def once(build):
        built = {}

        def cached(*args, **kwargs):
            config = next(a for a in args if hasattr(a, "to_json_best_effort"))
            key = config.to_json_best_effort()
            if key not in built:
                built[key] = build(*args, **kwargs)
            return built[key]

        return cached

    simcse.build_step = once(simcse.build_step)
    distill_run.Distiller.make_step = once(distill_run.Distiller.make_step)


TIMINGS = ("sentences_per_second", "data_wait_ms")  # metrics rows' timings: no two runs share them


def ending(workdir: Path) -> dict:
    """What a finished run left: a digest of its latest parameters, sts_test.json, the metrics rows
    (without throughput and data wait, which are timings), the best steps, and any temporary file or folder."""
    import hashlib
    import json

    import jax
    import numpy as np

    from distilface_jax.trained_model import load_run_model

    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(load_run_model(str(workdir)).params)):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {
        "params": digest.hexdigest(),
        "sts_test": json.loads((workdir / "sts_test.json").read_text()),
        "metrics": [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows],
        "best": sorted(os.listdir(workdir / "best")),
        "litter": sorted(
            str(path.relative_to(workdir))
            for path in workdir.rglob("*")
            if ".tmp" in path.name or "orbax-checkpoint-tmp" in path.name
        ),
    }


# ----------------------------------------------------------------------------- in the test


class Victim:
    """Runs `train ARGS` frozen at each hooked event under `roots`; `snapshot(index, event)` says
    whether to copy the roots there. `events` lists every event seen, in order."""

    def __init__(self, roots: list[Path], arguments: list[str], *, env: dict, cwd: Path, log: Path):
        self.roots = [Path(os.path.abspath(root)) for root in roots]
        self.arguments, self.env, self.cwd, self.log = arguments, env, cwd, log
        self.events: list[str] = []
        self.returncode: Optional[int] = None

    def run(self, snapshot: Callable[[int, str], Optional[Path]], timeout: float = 600) -> None:
        report_read, report_write = os.pipe()
        ack_read, ack_write = os.pipe()
        with open(self.log, "w") as log:
            process = subprocess.Popen(
                [sys.executable, __file__, "freeze", *map(str, self.roots), "--", *self.arguments],
                env=dict(self.env, FAULT_REPORT_FD=str(report_write), FAULT_ACK_FD=str(ack_read)),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[report_write, ack_read],
            )
        os.close(report_write)
        os.close(ack_read)
        try:
            for line in _lines(report_read):
                _, status = os.waitpid(process.pid, os.WUNTRACED)  # Returns once every thread has stopped.
                if not os.WIFSTOPPED(status):
                    raise RuntimeError(f"the run ended ({status}) at event {line!r} instead of stopping")
                self.events.append(line)
                target = snapshot(len(self.events) - 1, line)
                if target is not None:
                    for index, root in enumerate(self.roots):
                        if root.exists():
                            shutil.copytree(root, target / str(index), symlinks=True)
                os.kill(process.pid, signal.SIGCONT)
                os.write(ack_write, b"x")
            self.returncode = process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(report_read)
            os.close(ack_write)


def _lines(fd: int) -> Iterator[str]:
    buffer = b""
    while chunk := os.read(fd, 65536):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()


def restore(snapshot: Path, roots: list[Path]) -> None:
    """Puts the roots back as the snapshot holds them (a root that did not exist yet: removed)."""
    for index, root in enumerate(roots):
        shutil.rmtree(root, ignore_errors=True)
        if (snapshot / str(index)).exists():
            shutil.copytree(snapshot / str(index), root, symlinks=True)


def rerun(points: list[tuple[str, Path]], roots: list[Path], config_flags: list[str], *, env: dict, log: Path) -> list:
    """Runs `_rerun` in a process of its own (`env` sets its devices); returns its report."""
    import json

    folder = log.parent
    (folder / "points.json").write_text(json.dumps([(event, str(path)) for event, path in points]))
    with open(log, "w") as output:
        subprocess.run(
            [
                sys.executable,
                __file__,
                "rerun",
                str(folder / "points.json"),
                str(folder / "report.json"),
                *map(str, roots),
                "--",
                *config_flags,
            ],
            env=env,
            cwd=os.path.dirname(os.path.abspath(__file__)),
            stdout=output,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=1200,
        )
    return json.loads((folder / "report.json").read_text())


# ----------------------------------------------------------------------------- kill points, the test's side

_STEP_SAVE = r"\d:(best|checkpoints)/\d+\.orbax-tmp"  # the temporary folder of an Orbax save
# Inside the first save of each Orbax folder: its start, its metadata, an item's arrays half
# described, an item committed inside it, and the step's commit file just before the rename.
_INSIDE_SAVE = re.compile(
    rf"^(mkdir {_STEP_SAVE}|create {_STEP_SAVE}/_CHECKPOINT_METADATA|create {_STEP_SAVE}/params\.orbax-tmp/_METADATA"
    rf"|rename {_STEP_SAVE}/meta\.orbax-tmp .*|create {_STEP_SAVE}/commit_success\.txt)$"
)
TORN_LINE_EVERY = 3  # every third half-appended metrics line: 5 of a 6-step run's 13


def is_kill_point(event: str, seen: dict) -> bool:
    """Kill points: every commit (a rename to a final name); the first delete of a step in each
    Orbax folder; every third half-appended line; moments inside the first save of each Orbax folder; the first file
    each other writer creates (a folder half filled, a temporary file half written)."""
    operation, *paths = event.split()
    if operation == "rename" and ".orbax-tmp" not in paths[-1]:
        return True
    if operation == "append-half":
        seen["appends"] = seen.get("appends", -1) + 1
        return seen["appends"] % TORN_LINE_EVERY == 0
    if operation == "delete" and re.fullmatch(r"\d:(best|checkpoints)/\d+", paths[0]):
        key = re.sub(r"\d+$", "N", event)  # the first delete of an old checkpoint, of a superseded best
    elif re.match(_STEP_SAVE, paths[0]):
        key = re.sub(r"/\d+\.orbax-tmp", "/N", event) if _INSIDE_SAVE.match(event) else None
    elif operation == "create" or paths[0] == "0:.":
        key = f"{operation} {paths[0].split('/')[0]}"
    else:
        key = None
    if key is None or key in seen:
        return False
    seen[key] = True
    return True


def environment(compilation_cache: Path, root: Path, **extra: str) -> dict:
    """One CPU device; programs compiled once, shared by the frozen run and the reruns."""
    environment = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        HF_HUB_OFFLINE="1",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        PYTHONPATH=str(root),
        JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        **extra,
    )
    environment.pop("JAX_NUM_CPU_DEVICES", None)
    return environment


def kill_points_and_reruns(
    tmp: Path, roots: list[Path], train_flags: list[str], config_flags: list[str], env: dict, cwd: Path
) -> tuple[list[tuple[str, Path]], Path, list[dict]]:
    """(kill points as (event, copy), the uninterrupted run's workdir, the report of the reruns)."""
    points, seen = [], {}

    def snapshot(index: int, event: str) -> Optional[Path]:
        if not is_kill_point(event, seen):
            return None
        points.append((event, tmp / "points" / f"{index:04d}"))
        return points[-1][1]

    victim = Victim(roots, train_flags, env=env, cwd=cwd, log=tmp / "uninterrupted.log")
    victim.run(snapshot)
    assert victim.returncode == 0, (tmp / "uninterrupted.log").read_text()[-3000:]
    reference = tmp / "reference"
    shutil.copytree(roots[0], reference)
    (tmp / "reruns").mkdir()
    report = rerun(points, roots, config_flags, env=env, log=tmp / "reruns" / "log.txt")
    return points, reference, report


def check_every_rerun(report: list[dict], reference: Path, total_steps: int) -> None:
    """Every rerun completed with the uninterrupted run's parameters (bit for bit), sts_test.json,
    metrics rows (each step once) and best step, no temporary file left, at most one repair line,
    and never a best step that the resumed checkpoint names gone missing."""
    expected = ending(reference)
    for result in report:
        where = f"killed at {result['event']!r}: {result.get('error', '')[-3000:]}"
        assert "error" not in result, where
        assert result["final_step"] == total_steps, where
        assert result["params"] == expected["params"], where
        assert result["sts_test"] == expected["sts_test"], where
        assert result["metrics"] == expected["metrics"], where
        assert result["best"] == expected["best"], where
        assert result["litter"] == [], where
        repairs = [line for line in result["log"] if " was interrupted (" in line]
        assert len(repairs) <= 1 and not any("is missing" in line for line in repairs), where


def check_best_moves_and_is_remembered(reference: Path) -> None:
    """The uninterrupted run (a dev evaluation and a checkpoint after each step) improves more
    than once, so at some kill points a best step is written past the last checkpoint while the
    one it names is still there, or waits to be pruned; and its best step is followed by lower
    scores, so a resume after it must keep that best/ (a run that forgot its best score would
    move best/ to a later, worse step, and test that)."""
    dev = [row["STSBenchmark"] for row in ending(reference)["metrics"] if row.get("split") == "dev"]
    improvements = [index for index, score in enumerate(dev) if score > max(dev[:index], default=-1.0)]
    assert len(improvements) >= 2 and improvements[-1] < len(dev) - 1, dev


if __name__ == "__main__":
    {"freeze": _freeze, "rerun": _rerun}[sys.argv[1]](sys.argv[2:])
