"""A run folder (`--workdir`): every name in it, its paths on a local disk or in a bucket, and
the one atomic write.

    WORKDIR/config.json                  the resolved training config (RUN_CONFIG_FILE)
    WORKDIR/model/                       HF config.json + tokenizer files (MODEL_DIR)
    WORKDIR/checkpoints/<step>/          Orbax: params, opt_state, progress, meta (LATEST_DIR)
    WORKDIR/best/<step>/                 Orbax: params, meta of the best STS-B dev step (BEST_DIR)
    WORKDIR/metrics.jsonl                one JSON object per log line (METRICS_FILE)
    WORKDIR/tensorboard/                 TensorBoard events (TENSORBOARD_DIR)
    WORKDIR/run_info.json                devices, versions, total steps, extensions (RUN_INFO_FILE)
    WORKDIR/sts_test.json                the final STS test (STS_TEST_FILE)
    WORKDIR/profile/                     a `profile_steps` trace (PROFILE_DIR)
    WORKDIR/cache/                       tokenized data (CACHE_DIR; `data.cache_dir` moves it)
    WORKDIR/builtin/                     the generated `builtin:tiny` demo files (BUILTIN_DIR)
    WORKDIR/distill.json                 a distilled student's read-out (DISTILL_FILE; distill/run.py)
    WORKDIR/mixture.json                 a mixture corpus as read: sources, counts, fingerprint (MIXTURE_FILE)

Orbax writes checkpoints to a local disk or a bucket (gs://, through `etils.epath`) itself;
`write_text`, `append_line`, `save_folder` and `load_folder` do the same for the run's small
files, so a TPU pod can use a `gs://` workdir end to end (bucket paths need `gcsfs`;
`launch/tpu_pod.sh` installs it on every TPU worker).

Write-then-rename (`atomic_file`, `atomic_directory`): a killed process
never leaves a half-written output behind. `tempfile.mkstemp`/`mkdtemp` create 0600/0700
entries whatever the umask (they are meant to be private); a model or a results file is meant
to be shared, so the staged file or folder is given the mode a plain `open`/`mkdir` would have
had (0644/0755 under umask 022) before it is renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from etils import epath

RUN_CONFIG_FILE = "config.json"
MODEL_DIR = "model"
LATEST_DIR = "checkpoints"
BEST_DIR = "best"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
RUN_INFO_FILE = "run_info.json"
STS_TEST_FILE = "sts_test.json"
PROFILE_DIR = "profile"
CACHE_DIR = "cache"
BUILTIN_DIR = "builtin"
DISTILL_FILE = "distill.json"  # a distilled student: its teacher pipeline and width map
MIXTURE_FILE = "mixture.json"  # a mixture corpus as read (training/mixture.py): compared on resume


# ----------------------------------------------------------------------------- paths


def path(workdir: str, *parts: str) -> epath.Path:
    return epath.Path(workdir).joinpath(*parts)


def is_remote(workdir: str) -> bool:
    """A bucket path (gs://...), not a local one."""
    return "://" in str(workdir)


def absolute(workdir: str) -> str:
    """Orbax requires absolute paths; bucket paths (gs://...) are absolute already."""
    workdir = str(workdir)
    return workdir if is_remote(workdir) else os.path.abspath(workdir)


def join(workdir: str, name: str) -> str:
    # Plain string joins keep gs:// paths intact (pathlib would collapse the double slash).
    return workdir.rstrip("/") + "/" + name


def default_cache_dir(workdir: str):
    """WORKDIR/cache for a local run; None (no token cache) for a bucket workdir."""
    return None if is_remote(workdir) else f"{workdir}/{CACHE_DIR}"


# ----------------------------------------------------------------------------- atomic writes


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | os.PathLike, *, directory: bool) -> None:
    """Gives a mkstemp/mkdtemp entry the mode open()/mkdir() would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _public_tree(folder: Path) -> None:
    """Every entry of a staged folder gets the umask's default mode: writers inside it (e.g.
    safetensors, which writes 0600) do not decide who may read an exported model."""
    for root, folders, files in os.walk(folder):
        for name in folders:
            public_mode(os.path.join(root, name), directory=True)
        for name in files:
            public_mode(os.path.join(root, name), directory=False)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, *, overwrite: bool = False, first_wins: bool = False) -> Iterator[Path]:
    """Yields an empty staging folder beside `target`; on success it becomes `target`.

    A non-empty existing `target` is an error unless `overwrite`, checked *before* any work.
    `first_wins`: several processes may stage the same (identical) content at once; the first
    rename wins and the later copies are dropped, so none reads another's half-written files.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (overwrite or first_wins):
        raise FileExistsError(f"{target}: folder exists and is not empty (overwrite=True replaces it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        public_mode(staging, directory=True)
        yield staging
        _public_tree(staging)
        if first_wins:
            try:
                os.rename(staging, target)
            except OSError:  # Another process renamed its identical copy first.
                shutil.rmtree(staging, ignore_errors=True)
            return
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb", *, sync: bool = False) -> Iterator:
    """Yields an open temporary file beside `target`; it replaces `target` only on success
    (after an fsync when `sync`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        public_mode(temporary, directory=False)
        with os.fdopen(descriptor, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


# ----------------------------------------------------------------------------- local or bucket files


def write_text(target: epath.Path, text: str) -> None:
    """Whole-file write; locally through a temporary file and a rename, so it is atomic."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(str(target)):
        target.write_text(text)  # Object stores replace whole objects atomically already.
        return
    with atomic_file(str(target), "w") as handle:
        handle.write(text)


def append_line(target: epath.Path, line: str) -> None:
    """Appends locally; object stores have no append, so there the object is rewritten."""
    if is_remote(str(target)):
        previous = target.read_text() if target.exists() else ""
        target.write_text(previous + line + "\n")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(str(target), "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def save_folder(save_fn, target: epath.Path) -> None:
    """Runs `save_fn(local_dir)` (e.g. `tokenizer.save_pretrained`) and copies the result to `target`."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as local:
        save_fn(local)
        for name in sorted(os.listdir(local)):
            source = os.path.join(local, name)
            if os.path.isfile(source):
                epath.Path(source).copy(target / name, overwrite=True)


def load_folder(source: epath.Path, load_fn):
    """`load_fn(local_dir)` over a local copy of a (possibly remote) folder's files."""
    if not is_remote(str(source)):
        return load_fn(str(source))
    with tempfile.TemporaryDirectory() as local:
        for item in source.iterdir():
            if item.is_file():
                item.copy(epath.Path(local) / item.name)
        return load_fn(local)
