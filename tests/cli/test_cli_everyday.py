"""The entry points as a user meets them, in subprocesses: one-line errors (exit 2) before any
expensive work, refusals that leave a workdir byte for byte as it was, help texts, quiet output,
files others can read, Ctrl-C that saves, a second Ctrl-C that aborts quietly, extending a
finished run, and a profiler window that changes nothing.

Processes run concurrently (module-scoped) to keep the wall time small on 2 cores."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT

TINY = ["--config.max_steps=8", "--config.log_every=1", "--config.eval_every=4", "--config.checkpoint_every=4"]


def env() -> dict:
    environment = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )
    environment.pop("JAX_NUM_CPU_DEVICES", None)
    return environment


def start(module: str, *arguments, umask: int = 0o022, stderr=subprocess.PIPE) -> subprocess.Popen:
    # `umask=`, not a preexec_fn: that would fork this (jax-importing, threaded) process first.
    return subprocess.Popen(
        [sys.executable, "-m", f"distilface_jax.{module}", *map(str, arguments)],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        umask=umask,
    )


def finish(process: subprocess.Popen, timeout: int = 400) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def train(workdir, *overrides, config="configs/tiny.py", stderr=subprocess.PIPE) -> subprocess.Popen:
    return start("train", f"--config={config}", f"--workdir={workdir}", *overrides, stderr=stderr)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------------------------------ errors and help


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "empty.txt").write_text("")
    (folder / "blank.txt").write_text("  \n\n\t\n")
    (folder / "latin1.txt").write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    (folder / "a_file").write_text("x")
    (folder / "out_dir").mkdir()
    (folder / "full_dir").mkdir()
    (folder / "full_dir" / "keep.txt").write_text("mine")
    (folder / "sentences.txt").write_text("a cat\na dog\n")
    teacher = folder / "two_layer_teacher"  # config.json only: a check that loaded it would fail otherwise
    teacher.mkdir()
    (teacher / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2}))
    broken = folder / "broken_teacher"  # its layers fit the config's cut; it fails only when loaded
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 6}))
    from distilface_jax.training.tiny_data import write_tiny_sts

    write_tiny_sts(str(folder / "sts"))
    return folder


ERROR_CASES = {  # name: (module, arguments with {d} = the inputs folder, what the one line must say)
    "misspelt key": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.batch_sise=16"],
        "--config.batch_sise: no such config key; did you mean --config.batch_size?",
    ),
    "misspelt config path": (
        "train",
        ["--config=configs/tny.py", "--workdir={run}"],
        "--config configs/tny.py: no such file",
    ),
    "bad value": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.batch_size=3x"],
        "--config.batch_size=3x: expected int",
    ),
    "empty training file": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.data.train_file={d}/empty.txt"],
        "empty.txt: no training sentences (the file is empty)",
    ),
    "blank training file": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.data.train_file={d}/blank.txt"],
        "blank.txt: no training sentences (the file holds only blank lines)",
    ),
    "fewer lines than one batch": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.data.train_file={d}/sentences.txt"],
        "sentences.txt: 2 sentences (non-blank lines), fewer than one global batch (--config.batch_size=32)",
    ),
    "sup format on a text file": (
        "train",
        [
            "--config=configs/tiny.py",
            "--workdir={run}",
            "--config.data.train_file={d}/sentences.txt",
            "--config.data.format=sup",
        ],
        "--config.data.format=sup reads a CSV with a header naming sent0, sent1[, hard_neg]; {d}/sentences.txt is not",
    ),
    "student layer out of range": (
        "train",
        [
            "--config=configs/distill_minilm_l3.py",
            "--workdir={run}",
            "--config.distill.teacher={d}/two_layer_teacher",
            "--config.data.train_file=builtin:tiny",
            "--config.eval.sts_dir=builtin:tiny",
        ],
        "--config.distill.student_layers: layer 3 is out of range for the 2-layer teacher",
    ),
    "hidden-state term without a cut student": (
        "train",
        [
            "--config=configs/distill_minilm_l3.py",
            "--workdir={run}",
            "--config.distill.student_layers=[]",
            "--config.distill.hidden_weight=1.0",
        ],
        "--config.distill.hidden_weight=1.0: needs a student cut from the teacher (distill.student_layers)",
    ),
    "queue without the InfoNCE term": (
        "train",
        [
            "--config=configs/distill_minilm_l3.py",
            "--workdir={run}",
            "--config.distill.contrastive_weight=0",
            "--config.distill.queue_steps=4",
        ],
        "--config.distill.queue_steps=4: adds negatives to the InfoNCE term: set distill.contrastive_weight > 0",
    ),
    "teacher fails to load": (  # found only when loaded: still nothing written before
        "train",
        [
            "--config=configs/distill_minilm_l3.py",
            "--workdir={run}",
            "--config.distill.teacher={d}/broken_teacher",
            "--config.data.train_file=builtin:tiny",
            "--config.eval.sts_dir=builtin:tiny",
        ],
        "error: teacher: {d}/broken_teacher",
    ),
    "STS folder is a file": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.eval.sts_dir={d}/a_file"],
        "--config.eval.sts_dir={d}/a_file: is a file, not a folder",
    ),
    "evaluate step syntax": (  # checked first: the run folder does not even exist
        "evaluate",
        ["--workdir={d}/no_run", "--step=abc", "--sts-dir={d}/sts"],
        "--step must be a step number or 'best', got 'abc'",
    ),
    "encode batch size": (  # checked first: the model folder does not exist
        "encode",
        ["--model=/does/not/exist", "--batch-size=0", "--input={d}/sentences.txt", "--output={d}/emb.npy"],
        "--batch-size must be >= 1, got 0",
    ),
    "encode blank input": (
        "encode",
        ["--model=/does/not/matter", "--input={d}/blank.txt", "--output={d}/emb.npy"],
        "blank.txt: no sentences (the file holds only blank lines)",
    ),
    "non-UTF-8 training file": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.data.train_file={d}/latin1.txt"],
        "latin1.txt: line 2: not UTF-8 (byte 0xe9)",
    ),
    "missing STS folder": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.eval.sts_dir={d}/no_sts"],
        "--config.eval.sts_dir={d}/no_sts: no such",
    ),
    "workdir is a file": (
        "train",
        ["--config=configs/tiny.py", "--workdir={d}/a_file"],
        "--workdir {d}/a_file: not a folder",
    ),
    "missing model folder": (
        "train",
        ["--config=configs/tiny.py", "--workdir={run}", "--config.model.name_or_path=/does/not/exist"],
        "/does/not/exist: no such folder",
    ),
    "encode output is a folder": (
        "encode",
        ["--model=/does/not/matter", "--input={d}/sentences.txt", "--output={d}/out_dir"],
        "--output {d}/out_dir: is a folder",
    ),
    "encode missing model": (
        "encode",
        ["--model=/does/not/exist", "--input={d}/sentences.txt", "--output={d}/emb.npy"],
        "/does/not/exist: no such folder",
    ),
    "encode non-UTF-8 input": (
        "encode",
        ["--model=/does/not/matter", "--input={d}/latin1.txt", "--output={d}/emb.npy"],
        "latin1.txt: line 2: not UTF-8",
    ),
    "export non-empty out": (
        "export",
        ["--workdir={run}", "--out={d}/full_dir"],
        "--out {d}/full_dir: folder exists and is not empty (pass --overwrite",
    ),
    "export missing workdir": (
        "export",
        ["--workdir={d}/no_run", "--out={d}/new_out"],
        "--workdir {d}/no_run: no such",
    ),
    "evaluate json is a folder": (
        "evaluate",
        ["--model=/does/not/matter", "--sts-dir={d}/sts", "--json={d}/out_dir"],
        "--json {d}/out_dir: is a folder",
    ),
}


@pytest.fixture(scope="module")
def error_runs(inputs):
    processes = {
        name: start(module, *[a.format(d=inputs, run=_case_workdir(inputs, name)) for a in arguments])
        for name, (module, arguments, _) in ERROR_CASES.items()
    }
    return {name: finish(process, timeout=300) for name, process in processes.items()}


def _case_workdir(inputs: Path, name: str) -> Path:
    return inputs / "runs" / name.replace(" ", "_")


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_user_errors_are_one_line_exit_2_before_any_work(name, error_runs, inputs):
    """Each mistake is named before anything is written or loaded (where the check came after the
    work, the run folder would exist, or the error would name the missing model or run folder)."""
    status, out, err = error_runs[name]
    expected = ERROR_CASES[name][2].format(d=inputs)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err[-3000:]
    assert lines == [lines[0]] and lines[0].startswith("error: ") and expected in lines[0], err[-3000:]
    assert not _case_workdir(inputs, name).exists() and not (inputs / "new_out").exists()  # nothing written
    assert "config_config" not in err and "Traceback" not in err


def _option_chunks(help_text: str) -> list[str]:
    options = help_text.split("options:", 1)[1]
    return [chunk for chunk in re.split(r"\n  (?=-)", options) if chunk.strip() and not chunk.startswith("-h")]


@pytest.fixture(scope="module")
def help_runs():
    processes = {
        "train": start("train", "--help"),
        "train tiny": start("train", "--config", "configs/tiny.py", "--help"),
        "train distill": start("train", "--config", "configs/distill_minilm_l3.py", "--help"),
        **{module: start(module, "--help") for module in ("encode", "export", "evaluate")},
    }
    return {name: finish(process, timeout=300) for name, process in processes.items()}


def test_train_help_lists_every_config_key_with_default_and_meaning(help_runs):
    from distilface_jax.config.key_help import KEY_HELP

    status, out, err = help_runs["train"]
    assert status == 0, err
    for key, meaning in KEY_HELP.items():
        if not key.startswith("distill."):  # only distillation configs have that block
            assert re.search(rf"--config\.{re.escape(key)}=.*? +{re.escape(meaning)}", out), key
    status, distill_out, err = help_runs["train distill"]
    assert status == 0, err
    for key, meaning in KEY_HELP.items():
        assert re.search(rf"--config\.{re.escape(key)}=.*? +{re.escape(meaning)}", distill_out), key
    assert "--config.batch_size=64 " in out and "--config.extend=False " in out and "--workdir" in out
    status, out, _ = help_runs["train tiny"]
    assert status == 0 and "--config.batch_size=32 " in out and "configs/tiny.py" in out


@pytest.mark.parametrize("module", ["encode", "export", "evaluate"])
def test_every_option_has_help_with_its_default_and_step_best_is_explained(help_runs, module):
    status, out, err = help_runs[module]
    assert status == 0, err
    chunks = _option_chunks(out)
    assert len(chunks) >= 5
    for chunk in chunks:
        assert "(default:" in chunk, chunk
    step = next(chunk for chunk in chunks if chunk.startswith("--step"))
    assert "'best'" in step and "highest STS-B dev score" in " ".join(step.split())
    flags = [chunk for chunk in chunks if chunk.startswith(("--no-progress", "--normalize", "--overwrite"))]
    assert flags and all(chunk.rstrip().endswith("(default: off)") for chunk in flags), flags  # not "True"


# ------------------------------------------------------------------------------ training runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three concurrent tiny runs: the base one (under umask 022), the same with a profiler
    window, and a long one to be interrupted."""
    folder = tmp_path_factory.mktemp("runs")
    processes = {
        "base": train(folder / "base", *TINY),
        # Evaluation does not touch the training state, so the profiled run skips it (to save time)
        # and must still give the base run's losses exactly.
        "profiled": train(
            folder / "profiled",
            *TINY,
            "--config.profile_steps=2:4",
            "--config.eval_every=0",
            "--config.eval.final_test=False",
        ),
        "interrupted": train(
            folder / "interrupted",
            "--config.max_steps=100000",
            "--config.log_every=1",
            "--config.eval_every=0",
            "--config.eval.final_test=False",
            "--config.checkpoint_every=100000",
        ),
    }
    processes["aborted"] = _abort_with_two_ctrl_c(folder / "aborted")
    # Interrupt the long run as soon as it has logged two steps (it would eat the CPU otherwise).
    process, workdir = processes["interrupted"], folder / "interrupted"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not (workdir / "metrics.jsonl").exists() or len(_records(workdir)) < 2):
        if process.poll() is not None:
            break
        time.sleep(0.2)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    processes["interrupted"] = finish(process, timeout=120)
    return folder, processes


def _abort_with_two_ctrl_c(workdir: Path) -> tuple[int, str, str]:
    """A long run that gets Ctrl-C twice once a few checkpoints are saved: the first asks for a
    save at the step's end; the second is sent while the process is stopped right after the
    first was taken (so the two cannot merge into one, nor the save finish in between)."""
    log = workdir.parent / "aborted.log"
    with open(log, "w") as stderr:
        process = train(
            workdir,
            "--config.max_steps=100000",
            "--config.log_every=1",
            "--config.eval_every=0",
            "--config.eval.final_test=False",
            "--config.checkpoint_every=1",
            stderr=stderr,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and len(_checkpoints(workdir)) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    while time.monotonic() < deadline and process.poll() is None and "interrupt: saving" not in log.read_text():
        time.sleep(0.002)
    process.send_signal(signal.SIGSTOP)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGCONT)
    status, out, _ = finish(process, timeout=120)
    return status, out, log.read_text()


def _checkpoints(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit()) if folder.is_dir() else []


@pytest.fixture(scope="module")
def base_run(runs):
    folder, processes = runs
    status, out, err = finish(processes["base"])
    assert status == 0, err[-3000:]
    return folder / "base", out, err


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_training_output_is_only_our_own_lines_with_progress_and_eval_results(base_run):
    workdir, out, err = base_run
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if line.strip()]
    bar = re.compile(r"^\d+%\|.*\| \d+/8 \[")
    ours = ("step 4, dev: ", "step 8, dev: ", "test of best step ", "done: 8 steps", "skipped ")
    strangers = [line for line in lines if not bar.match(line) and not line.startswith(ours)]
    assert not strangers, strangers  # no absl/orbax warnings, datasets bars, transformers notices
    assert any(line.startswith("step 4, dev: evaluating 2 tasks") for line in lines)
    assert any(re.match(r"step 4, dev: STSBenchmark \d+\.\d\d +SICKRelatedness \d+\.\d\d +avg", line) for line in lines)
    bar_counts = {int(m.group(1)) for line in lines if (m := re.search(r"\| (\d+)/8 \[", line))}
    assert {1, 8} <= bar_counts  # moved at the first step, not only at a log or an eval
    best = max((r for r in _records(workdir) if r.get("split") == "dev"), key=lambda r: r["STSBenchmark"])["step"]
    assert f"STS test, best step {best}" in out and "STSBenchmark" in out


@pytest.fixture(scope="module")
def shared_files(base_run, tmp_path_factory):
    """export, encode and evaluate of the base run, concurrently, under umask 022."""
    workdir = base_run[0]
    folder = tmp_path_factory.mktemp("shared")
    (folder / "in.txt").write_text("a cat sits\nthe dog runs\n")
    processes = {
        "export": start("export", "--workdir", workdir, "--step", "best", "--out", folder / "exported"),
        "encode": start("encode", "--workdir", workdir, "--input", folder / "in.txt", "--output", folder / "emb.npy"),
        "evaluate": start(
            "evaluate", "--workdir", workdir, "--sts-dir", workdir / "builtin" / "sts", "--json", folder / "sts.json"
        ),
    }
    results = {name: finish(process, timeout=300) for name, process in processes.items()}
    for name, (status, _, err) in results.items():
        assert status == 0, (name, err[-3000:])
    return folder, results


def test_written_files_respect_the_umask(base_run, shared_files):
    workdir = base_run[0]
    folder, _ = shared_files
    files = [
        workdir / "config.json",
        workdir / "run_info.json",
        workdir / "sts_test.json",
        workdir / "model" / "config.json",
        folder / "emb.npy",
        folder / "sts.json",
    ]
    exported = folder / "exported"
    files += [path for path in exported.rglob("*") if path.is_file()]
    folders = [exported, *[path for path in exported.rglob("*") if path.is_dir()], workdir / "builtin"]
    assert exported / "model.safetensors" in files
    assert {str(path): oct(mode(path)) for path in files if mode(path) != 0o644} == {}
    assert {str(path): oct(mode(path)) for path in folders if mode(path) != 0o755} == {}


def test_export_and_encode_print_only_their_result_line(shared_files, base_run):
    _, results = shared_files
    # evaluate's table says which checkpoint it scored (the latest, without --step).
    assert results["evaluate"][1].splitlines()[0] == f"STS test, step 8 of {base_run[0]}"
    export_lines = [line for line in results["export"][2].splitlines() if line.strip()]
    assert len(export_lines) == 1 and export_lines[0].startswith("exported step "), export_lines
    encode_lines = [line for line in re.split(r"[\r\n]", results["encode"][2]) if line.strip()]
    assert [line for line in encode_lines if not line.strip().startswith("embedding:")] == [
        "wrote 2 embeddings of size 32 to " + str(shared_files[0] / "emb.npy")
    ]


def test_profile_window_writes_a_trace_and_changes_no_result(runs, base_run):
    folder, processes = runs
    status, _, err = finish(processes["profiled"])
    assert status == 0, err[-3000:]
    traces = list((folder / "profiled" / "profile").rglob("*.xplane.pb"))
    assert traces and all(path.stat().st_size > 0 for path in traces)
    losses = lambda workdir: [(r["step"], r["loss"]) for r in _records(workdir) if "loss" in r]  # noqa: E731
    assert losses(folder / "profiled") == losses(base_run[0]) and len(losses(base_run[0])) == 8


def test_first_ctrl_c_saves_at_the_step_boundary_and_exits_130(runs):
    folder, processes = runs  # the fixture sent SIGINT once two steps were logged
    status, _, err = processes["interrupted"]
    workdir = folder / "interrupted"
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if line.strip()]
    assert status == 130, err[-3000:]
    assert any(line.startswith("interrupt: saving at the end of this step") for line in lines)
    last = lines[-1]
    match = re.match(r"interrupted: saved the checkpoint of step (\d+) in ", last)
    assert match and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    step = int(match.group(1))
    assert step >= 2 and (workdir / "checkpoints" / str(step)).is_dir()
    assert max(r["step"] for r in _records(workdir)) == step  # the steps up to it were logged, none lost


def test_second_ctrl_c_aborts_at_once_in_one_line_naming_the_step_to_resume_from(runs):
    status, _, err = runs[1]["aborted"]
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if line.strip()]
    workdir = runs[0] / "aborted"
    assert status == 130, err[-3000:]
    match = re.fullmatch(r"aborted: a second Ctrl-C; rerun the same command to resume from step (\d+)", lines[-1])
    assert match, err[-3000:]
    assert "Traceback" not in err and "Event loop is closed" not in err and "Exception" not in err, err[-3000:]
    assert int(match.group(1)) == max(_checkpoints(workdir)) >= 2  # the checkpoint a rerun resumes from


# ------------------------------------------------------------------------------ refusals change nothing


def tree_state(folder: Path) -> dict:
    """Every entry under `folder`: its content's hash (files), and its modification time."""
    state = {}
    for path in sorted(folder.rglob("*")):
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        state[str(path.relative_to(folder))] = (content, path.stat().st_mtime_ns)
    return state


REFUSALS = {  # name: (arguments, exit status, what the one line says)
    "contradicting config": (
        ["--config.batch_size=16"],
        1,
        "batch_size: checkpoint has 32, config has 16",
    ),
    "another recipe": (
        [
            "--config=configs/distill_minilm_l3.py",
            "--config.data.train_file=builtin:tiny",
            "--config.eval.sts_dir=builtin:tiny",
        ],
        1,
        "holds a SimCSE run and this config is distillation from sentence-transformers/all-MiniLM-L6-v2; "
        "nothing was changed. Use a new --workdir",
    ),
    "longer run without extend": (
        ["--config.max_steps=12"],
        1,
        "is a run of another length (max_steps: checkpoint has 8, config has 12); nothing was changed. "
        "To continue it to the new length, pass --config.extend=True",
    ),
    "bad input": (
        ["--config.eval.sts_dir=/does/not/exist"],
        2,
        "--config.eval.sts_dir=/does/not/exist: no such folder",
    ),
    # Found only once the model and data are read (its tokenizer has a word more than the
    # checkpoint's embeddings): refused before the token cache or anything else is written.
    "changed vocabulary": (
        [],
        1,
        "model shape vocab_size: checkpoint has",
    ),
}
PREPARE = {"changed vocabulary": lambda workdir: _append(workdir / "builtin" / "vocab.txt", "zebra\n")}


def _append(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text)


@pytest.fixture(scope="module")
def refusals(base_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("refusals")
    before, processes = {}, {}
    for name, (arguments, _, _) in REFUSALS.items():
        workdir = folder / name.replace(" ", "_")
        shutil.copytree(base_run[0], workdir)
        PREPARE.get(name, lambda _: None)(workdir)
        before[name] = tree_state(workdir)
        config = next((a.split("=", 1)[1] for a in arguments if a.startswith("--config=")), "configs/tiny.py")
        overrides = [a for a in arguments if not a.startswith("--config=")]
        keys = {a.split("=", 1)[0] for a in overrides}
        processes[name] = train(workdir, *[a for a in TINY if a.split("=")[0] not in keys], *overrides, config=config)
    return {
        name: (*finish(process), before[name], tree_state(folder / name.replace(" ", "_")))
        for name, process in processes.items()
    }


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_refused_run_leaves_the_workdir_byte_for_byte_as_it_was(name, refusals):
    status, _, err, before, after = refusals[name]
    _, expected_status, expected = REFUSALS[name]
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == expected_status and len(lines) == 1 and expected in lines[0], err[-3000:]
    assert after == before  # not a file added, removed, rewritten or touched


def test_extending_a_finished_run_needs_extend_and_replans_the_schedule(base_run, tmp_path):
    workdir = tmp_path / "extended"
    shutil.copytree(base_run[0], workdir)
    before = sorted(os.listdir(workdir / "checkpoints"))
    status, _, err = finish(train(workdir, *TINY[1:], "--config.max_steps=12"))
    assert status == 1 and "--config.extend=True" in err and "max_steps" in err, err[-3000:]
    assert sorted(os.listdir(workdir / "checkpoints")) == before  # a silent change is refused, nothing touched
    status, _, err = finish(train(workdir, *TINY[1:], "--config.max_steps=12", "--config.extend=True"))
    assert status == 0, err[-3000:]
    assert (workdir / "checkpoints" / "12").is_dir()
    info = json.loads((workdir / "run_info.json").read_text())
    assert info["extensions"] == [{"from_step": 8, "previous_total_steps": 8, "total_steps": 12}]
    assert info["total_steps"] == 12 and info["resumed_from_step"] == 8
    rates = {r["step"]: r["learning_rate"] for r in _records(workdir) if "loss" in r}
    assert sorted(rates) == list(range(1, 13))
    peak = 3e-4  # configs/tiny.py; HF's linear schedule: lr(step) = peak * (1 - updates_done / total)
    for step, rate in rates.items():
        total = 8 if step <= 8 else 12
        assert math.isclose(rate, peak * (1 - (step - 1) / total), rel_tol=1e-5), (step, rate)
    assert len([r for r in _records(workdir) if r.get("split") == "test"]) == 2  # tested again at 12
