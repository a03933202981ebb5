"""In-process checks of the everyday-use helpers: config help, signals, progress, file modes,
a write that fails midway, pooler warning, input checks, profiler window."""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
import sys

import pytest

from distilface_jax.cli import checks
from distilface_jax.cli.policy import UsageError
from distilface_jax.config import key_help
from distilface_jax.config.base import base_config

from helpers import ROOT


def test_every_config_key_has_a_meaning_and_nothing_else_does():
    from distilface_jax.config.base import distill_block

    with_distill = base_config()
    with_distill.distill = distill_block()  # the block that distillation configs add
    keys = [key for key, _ in key_help.flat_items(with_distill)]
    assert sorted(keys) == sorted(key_help.KEY_HELP)
    text = key_help.describe(with_distill)
    assert all(f"--config.{key}=" in text for key in keys)
    assert "--config.batch_size=64" in text and "global batch" in text


def test_misspelt_keys_get_a_suggestion_and_values_their_type():
    known = dict(key_help.flat_items(base_config()))
    assert key_help.unknown_key_message("batch_sise", known).endswith("did you mean --config.batch_size?")
    assert "did you mean --config.eval.sts_dir?" in key_help.unknown_key_message("eval.sts_dri", known)
    assert key_help.unknown_key_message("model.tiny", known) is None  # a whole sub-config
    assert key_help.unknown_key_message("learning_rate", known) is None
    assert key_help.overrides(["--config.a=1", "--config.b", "2", "--workdir=x"]) == [("a", "1"), ("b", "2")]
    assert "expected int" in key_help.value_message("batch_size", "abc", 64)
    assert key_help.value_message("learning_rate", "1e-3", 3e-5) is None
    assert "expected bool" in key_help.value_message("extend", "yes", False)


def test_first_ctrl_c_asks_for_a_save_and_the_second_aborts():
    from distilface_jax.training.interrupts import StopSignals

    before = signal.getsignal(signal.SIGINT)
    stop = StopSignals()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == signal.SIGINT and stop.interrupted
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before
    stop = StopSignals()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM and not stop.interrupted
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM still only asks for the save
    finally:
        stop.restore()


class _Output:
    def __init__(self):
        self.ready = False

    def is_ready(self):
        return self.ready


class _Bar:
    disable = False

    def __init__(self):
        self.n, self.lines = 0, []

    def update(self, count):
        self.n += count

    def write(self, line, file=None):
        self.lines.append(line)


def test_training_bar_counts_finished_steps_without_waiting():
    from distilface_jax.training.progress import StepProgress

    bar = _Bar()
    progress = StepProgress(10, 100, bar=bar)
    outputs = [_Output() for _ in range(3)]
    for step, output in zip((11, 12, 13), outputs):
        progress.dispatched(step, {"loss": output})
    assert bar.n == 0  # dispatched is not done
    outputs[0].ready = outputs[1].ready = True
    progress.poll()
    assert (bar.n, progress.done) == (2, 12)  # one per finished step, in order
    outputs[2].ready = True
    progress.dispatched(14, {"loss": _Output()})
    assert progress.done == 13
    progress.finished(14)  # metrics fetched at a log: everything up to it is done
    assert (bar.n, progress.done) == (4, 14)
    progress.write("step 14, dev: ...")
    assert bar.lines == ["step 14, dev: ..."]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_respect_the_umask(tmp_path, umask):
    from distilface_jax.run_folder import atomic_directory, atomic_file, write_text

    previous = os.umask(umask)
    try:
        with atomic_file(tmp_path / "a.npy") as handle:
            handle.write(b"x")
        write_text(__import__("etils.epath", fromlist=["Path"]).Path(tmp_path / "b.json"), "{}")
        with atomic_directory(tmp_path / "folder") as staging:
            (staging / "inside").write_text("y")
    finally:
        os.umask(previous)
    mode = lambda path: stat.S_IMODE(os.stat(path).st_mode)  # noqa: E731
    assert mode(tmp_path / "a.npy") == mode(tmp_path / "b.json") == 0o666 & ~umask
    assert mode(tmp_path / "folder") == 0o777 & ~umask


_WRITE_PAST_THE_FILE_SIZE_LIMIT = """
import resource, signal, sys
from etils import epath
from distilface_jax import run_folder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    run_folder.write_text(epath.Path(sys.argv[1]), '{"total_steps": 320, "note": "' + 'x' * 100_000 + '"}')
except OSError as error:
    print(error.errno)
"""


def test_a_write_that_fails_midway_leaves_the_previous_file_whole(tmp_path):
    """The run folder's text write (run_info.json, config.json, distill.json, a rewound
    metrics.jsonl) stopped by the kernel after 4 KiB of 100 KiB (a file-size limit, as a full
    disk or quota would): the previous file is still there, whole, and nothing else is left."""
    target = tmp_path / "run_info.json"
    target.write_text('{"total_steps": 160}')
    result = subprocess.run(
        [sys.executable, "-c", _WRITE_PAST_THE_FILE_SIZE_LIMIT, str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == str(errno.EFBIG), result.stderr[-2000:]
    assert target.read_text() == '{"total_steps": 160}'
    assert os.listdir(tmp_path) == ["run_info.json"]


def test_pooler_mismatch_warns_once_naming_both_and_the_key(tiny_distilbert_dir, tmp_path, caplog):
    from distilface_jax.config.base import unsup_recipe
    from distilface_jax.interop import hf
    from distilface_jax.models.sentence_pipeline import SentencePipeline
    from distilface_jax.training import initial_model

    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    folder = hf.save_pretrained(tmp_path / "st", SentencePipeline(loaded.config, loaded.tokenizer), loaded.params)
    config = unsup_recipe(str(folder))  # the recipe's cls on a folder made for mean pooling
    with caplog.at_level(logging.WARNING, logger="distilface_jax"):
        initial_model.build_initial_model(config, str(tmp_path / "run"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "mean" in warnings[0] and "'cls'" in warnings[0] and "--config.model.pooler=avg" in warnings[0]
    caplog.clear()
    config.model.pooler = "avg"
    with caplog.at_level(logging.WARNING, logger="distilface_jax"):
        initial_model.build_initial_model(config, str(tmp_path / "run"))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_training_file_checks_name_the_line(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "_READ_CHUNK", 8)  # multi-byte characters across chunk borders
    good = tmp_path / "good.txt"
    good.write_text("héllo wörld\nçà et là\n\n", encoding="utf-8")
    checks.check_train_file(str(good))
    bad = tmp_path / "bad.txt"
    bad.write_bytes("é one\ntwo\nthree \xe9\n".encode("utf-8").replace(b"\xc3\xa9\n", b"\xe9\n"))
    with pytest.raises(UsageError, match=r"bad.txt: line 3: not UTF-8 \(byte 0xe9\)"):
        checks.check_train_file(str(bad))
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n\n")
    with pytest.raises(UsageError, match="no training sentences"):
        checks.check_train_file(str(blank))
    with pytest.raises(UsageError, match="no such file"):
        checks.check_train_file(str(tmp_path / "nope.txt"))
    checks.check_train_file("some-user/some-dataset")  # a hub id: checked when loaded


def test_profile_window_parsing():
    from distilface_jax.training.profiling import parse_window

    assert parse_window("") is None and parse_window("3:5") == (3, 5)
    for text in ("5", "5:3", "a:b", "3:3"):
        with pytest.raises(ValueError):
            parse_window(text)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("keep_checkpoints", 0, "--config.keep_checkpoints=0: must be >= 1"),
        ("model.pooler", "mean", "--config.model.pooler='mean': must be one of cls, cls_before_pooler, avg"),
        ("data.format", "csv", "--config.data.format='csv': must be 'unsup' or 'sup'"),
        ("num_epochs", 0, "--config.num_epochs=0: must be >= 1 when max_steps is 0"),
        ("profile_steps", "5:3", "--config.profile_steps='5:3': START must be below STOP"),
    ],
)
def test_each_declared_check_names_its_key(key, value, message):
    config = base_config()
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    checks.check_settings(config)  # the defaults pass
    node[leaf] = value
    with pytest.raises(UsageError) as raised:
        checks.check_settings(config)
    assert str(raised.value).startswith(message)
    config.max_steps = 10  # num_epochs is not read when max_steps > 0
    if key != "num_epochs":
        with pytest.raises(UsageError):
            checks.check_settings(config)
    else:
        checks.check_settings(config)
