"""Everything `train` can check about its inputs before it builds a model or tokenizes a corpus:
the declared check of every config key (`config/keys.py`), then the files and folders the
config names.

Each failure is a `UsageError` naming the key, file or line to fix, so a mistake costs
milliseconds and one line of output, not minutes and a traceback.
"""

from __future__ import annotations

import glob
import os

from distilface_jax import run_folder
from distilface_jax.cli.policy import UsageError
from distilface_jax.config import keys
from distilface_jax.config.base import BUILTIN_TINY
from distilface_jax.config.keys import Config
from distilface_jax.evaluation import sts
from distilface_jax.training import corpus, matryoshka

_READ_CHUNK = 1 << 20


def check_workdir(workdir: str) -> None:
    if run_folder.is_remote(workdir):
        return
    existing = next((p for p in [workdir, *_parents(workdir)] if os.path.exists(p)), None)
    if existing is not None and not os.path.isdir(existing):
        where = "" if existing == workdir else f" ({existing} is a file)"
        raise UsageError(f"--workdir {workdir}: not a folder{where}")


def _parents(path: str) -> list[str]:
    parents, path = [], os.path.abspath(path)
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        parents.append(path)
    return parents


def check_settings(config: Config) -> None:
    """Values that are wrong whatever the data (each key's declared check): named by their key."""
    try:  # Positive and distinct here; against the embedding width once the model is known.
        matryoshka.resolve(config.loss.get("matryoshka_dims"), config.loss.get("matryoshka_weights"))
    except ValueError as error:
        raise UsageError(f"--{error}") from None
    try:
        keys.check_values(config)
    except keys.ConfigValueError as error:
        raise UsageError(str(error)) from None


def check_model_path(name_or_path: str, key: str = "model.name_or_path") -> None:
    """A local path that is not there is named as such (a hub id cannot be checked offline)."""
    if name_or_path == BUILTIN_TINY:
        return
    path = os.path.expanduser(name_or_path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--config.{key}={name_or_path}: is a file, not a model folder")
    if not os.path.exists(path) and name_or_path.startswith(("/", ".", "~")):
        raise UsageError(f"--config.{key}={name_or_path}: no such folder")


def check_train_file(train_file: str) -> None:
    """A local training file exists, is UTF-8 (else the line of the first bad byte) and holds a
    non-blank line. A name that is no local path is a hub data set id, checked when loaded.
    A list or glob (token store inputs): each local file is checked; gs:// paths when read."""
    if train_file == BUILTIN_TINY:
        return
    if corpus.is_many(train_file):
        for item in [part.strip() for part in train_file.split(",") if part.strip()]:
            if run_folder.is_remote(item):
                continue
            matches = sorted(glob.glob(os.path.expanduser(item))) if any(c in item for c in "*?[") else [item]
            if not matches:
                raise UsageError(f"--config.data.train_file={train_file}: {item} matches no file")
            for match in matches:
                check_train_file(match)
        return
    path = os.path.expanduser(train_file)
    key = "--config.data.train_file"
    if os.path.isdir(path):
        raise UsageError(f"{key}={train_file}: is a folder, not a file")
    if not os.path.exists(path):
        if train_file.startswith(("/", ".", "~")) or train_file.lower().endswith((".txt", ".csv", ".tsv", ".text")):
            raise UsageError(f"{key}={train_file}: no such file")
        return
    line, has_text, tail = 1, False, b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            data = tail + chunk
            # Decode whole lines only, so a multi-byte character split by the chunk is not an error.
            cut = data.rfind(b"\n") + 1 if len(chunk) == _READ_CHUNK else len(data)
            block, tail = data[:cut], data[cut:]
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError as error:
                bad_line = line + block[: error.start].count(b"\n")
                raise UsageError(
                    f"{train_file}: line {bad_line}: not UTF-8 "
                    f"(byte 0x{block[error.start]:02x}); convert the file to UTF-8"
                ) from None
            has_text = has_text or bool(text.strip())
            line += block.count(b"\n")
        if tail:
            try:
                has_text = has_text or bool(tail.decode("utf-8").strip())
            except UnicodeDecodeError:
                raise UsageError(f"{train_file}: line {line}: not UTF-8; convert the file to UTF-8") from None
    if not has_text:
        raise UsageError(f"{train_file}: no training sentences (the file is empty or blank)")


def check_sts_dir(config: Config) -> None:
    """The STS folder holds what this run will evaluate (dev during training, test at the end)."""
    sts_dir = config.eval.sts_dir
    if sts_dir == BUILTIN_TINY or (config.eval_every == 0 and not config.eval.final_test):
        return
    key = f"--config.eval.sts_dir={sts_dir}"
    if not os.path.isdir(os.path.expanduser(sts_dir)):
        raise UsageError(
            f"{key}: no such folder (it should hold STS/ and SICK/; launch/download_senteval_sts.sh fetches them)"
        )
    modes = (["dev"] if config.eval_every > 0 else []) + (["test"] if config.eval.final_test else [])
    for mode in modes:
        try:
            sts.load_suite(os.path.expanduser(sts_dir), mode=mode)
        except (ValueError, OSError) as error:
            raise UsageError(f"{key}: {error}") from None


def check_before_training(config: Config, workdir: str) -> None:
    """All of the above, cheapest first."""
    check_workdir(workdir)
    check_settings(config)
    check_model_path(config.model.name_or_path)
    if "distill" in config:  # A distillation config's teacher (configs/distill_*.py).
        check_model_path(config.distill.teacher, "distill.teacher")
    check_train_file(config.data.train_file)
    check_sts_dir(config)
