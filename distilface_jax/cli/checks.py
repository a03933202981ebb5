"""Everything `train` can check about its inputs before it builds a model or tokenizes a corpus:
the declared check of every config key (`config/keys.py`), then the files and folders the
config names. Among them: settings, paths, the training file (encoding, format, at least one global batch), a cut
student's layers (from the teacher's config.json), the STS folder.

Each failure is a `UsageError` naming the key, file or line to fix, so a mistake costs
milliseconds and one line of output, not minutes and a traceback.
"""

from __future__ import annotations

import csv
import glob
import json
import os

from distilface_jax import run_folder
from distilface_jax.cli.policy import UsageError
from distilface_jax.config import keys
from distilface_jax.config.base import BUILTIN_TINY
from distilface_jax.config.keys import Config
from distilface_jax.distill.student import StudentError, check_layers
from distilface_jax.evaluation import sts
from distilface_jax.training import corpus, matryoshka, mixture, tiny_data

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


def check_train_file(train_file: str) -> int:
    """A local training file exists, is UTF-8 (else the line of the first bad byte) and holds a
    non-blank line; returns its number of non-blank lines (at least the rows the reader finds).
    A name that is no local path is a hub data set id, checked when loaded (returns -1).
    A list or glob (token store inputs): each local file is checked; gs:// paths when read."""
    if train_file == BUILTIN_TINY:
        return tiny_data.BUILTIN_SENTENCES
    if corpus.is_many(train_file):
        total = 0
        for item in [part.strip() for part in train_file.split(",") if part.strip()]:
            if run_folder.is_remote(item):
                return -1  # Counted when read.
            matches = sorted(glob.glob(os.path.expanduser(item))) if any(c in item for c in "*?[") else [item]
            if not matches:
                raise UsageError(f"--config.data.train_file={train_file}: {item} matches no file")
            total += sum(max(check_train_file(match), 0) for match in matches)
        return total
    path = os.path.expanduser(train_file)
    key = "--config.data.train_file"
    if os.path.isdir(path):
        raise UsageError(f"{key}={train_file}: is a folder, not a file")
    if not os.path.exists(path):
        if train_file.startswith(("/", ".", "~")) or train_file.lower().endswith((".txt", ".csv", ".tsv", ".text")):
            raise UsageError(f"{key}={train_file}: no such file")
        return -1
    line, count, size, tail = 1, 0, 0, b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            size += len(chunk)
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
            # str.splitlines splits on \n, \r\n, \r (as HF datasets' text reader does) and a few more
            # separators: the count is never below the rows the reader finds, so a refusal is sure.
            count += sum(1 for piece in text.splitlines() if piece.strip())
            line += block.count(b"\n")
        if tail:
            try:
                count += sum(1 for piece in tail.decode("utf-8").splitlines() if piece.strip())
            except UnicodeDecodeError:
                raise UsageError(f"{train_file}: line {line}: not UTF-8; convert the file to UTF-8") from None
    if not count:
        what = "is empty" if size == 0 else "holds only blank lines"
        raise UsageError(f"{train_file}: no training sentences (the file {what})")
    return count


def check_mixture(train_file: str) -> int:
    """A mixture (a comma list, a glob, a .mixture.json) read as training will read it
    (`training/mixture.py`): every source a UTF-8 file with a non-blank line, the spec's keys,
    weights and caps valid, something left of every source; returns its number of sentences."""
    key = f"--config.data.train_file={train_file}"
    try:
        spec = mixture.parse(train_file)
        for source in spec.sources:
            try:
                check_train_file(source.path)  # Names the line of a non-UTF-8 byte.
            except UsageError as error:
                raise UsageError(f"{key}: {source.entry}: {error}") from None
        sentences, _, _ = mixture.read(spec)
    except mixture.MixtureError as error:
        raise UsageError(f"{key}: {error.detail}") from None
    return len(sentences)


def check_data(config) -> None:
    """The training file fits the data format and holds at least one global batch."""
    train_file, data_format = config.data.train_file, config.data.format
    key = f"--config.data.train_file={train_file}"
    if train_file.endswith(mixture.MIXTURE_SUFFIX) and config.data.token_store:
        raise UsageError(
            f"{key}: a .mixture.json is read in memory; --config.data.token_store=True does not read mixtures yet"
        )
    if mixture.is_mixture(train_file) and not config.data.token_store:
        if data_format != "unsup":
            raise UsageError(
                f"--config.data.format={data_format}: a mixture ({train_file}) is one sentence per line ('unsup'); "
                "--config.data.token_store=True reads a list of CSVs concatenated"
            )
        lines = check_mixture(train_file)
    else:
        lines = check_train_file(train_file)
    path = os.path.expanduser(train_file)
    if data_format == "sup" and train_file != BUILTIN_TINY and os.path.isfile(path):
        _check_supervised_header(train_file, path)
        lines -= 1  # the header
    elif data_format == "sup" and train_file == BUILTIN_TINY:
        raise UsageError(
            f"--config.data.format=sup reads a CSV of sent0, sent1[, hard_neg]; {BUILTIN_TINY} is one sentence per line"
        )
    if "distill" in config and config.distill.teacher and data_format != "unsup":
        raise UsageError(f"--config.data.format={data_format!r}: distillation reads one sentence per line ('unsup')")
    if 0 <= lines < config.batch_size:
        rows = "rows" if data_format == "sup" else "sentences"
        raise UsageError(
            f"{key}: {lines} {rows[:-1] if lines == 1 else rows} (non-blank lines), fewer than one global batch "
            f"(--config.batch_size={config.batch_size})"
        )


def _check_supervised_header(train_file: str, path: str) -> None:
    expected = "a CSV with a header naming sent0, sent1[, hard_neg]"
    if not path.lower().endswith((".csv", ".tsv")):
        raise UsageError(f"--config.data.format=sup reads {expected}; {train_file} is not a .csv or .tsv file")
    with open(path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle, delimiter="\t" if path.lower().endswith(".tsv") else ","), [])
    missing = [name for name in ("sent0", "sent1") if name not in header]
    if missing:
        raise UsageError(f"{train_file}: line 1: --config.data.format=sup reads {expected}; found {header}")


def check_student_layers(config) -> None:
    """A cut student's layers exist in the teacher, read from a local teacher's config.json."""
    distill = config.distill
    if not distill.student_layers:
        return
    config_file = os.path.join(os.path.expanduser(distill.teacher), "config.json")
    if not os.path.isfile(config_file):
        return  # A hub id: its config is read when it loads.
    try:
        with open(config_file, encoding="utf-8") as handle:
            teacher = json.load(handle)
        num_layers = int(teacher.get("num_hidden_layers", teacher.get("n_layers")))
    except (OSError, ValueError, TypeError):
        return  # The loader names what is wrong with the folder.
    try:
        check_layers(distill.student_layers, num_layers, distill.teacher)
    except StudentError as error:
        raise UsageError(str(error).replace("config.distill.", "--config.distill.")) from None


def check_sts_dir(config: Config) -> None:
    """The STS folder holds what this run will evaluate (dev during training, test at the end)."""
    sts_dir = config.eval.sts_dir
    if sts_dir == BUILTIN_TINY or (config.eval_every == 0 and not config.eval.final_test):
        return
    key = f"--config.eval.sts_dir={sts_dir}"
    if os.path.isfile(os.path.expanduser(sts_dir)):
        raise UsageError(f"{key}: is a file, not a folder (one holding STS/ and SICK/)")
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
        check_student_layers(config)
    check_data(config)
    check_sts_dir(config)
