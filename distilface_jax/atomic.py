"""Write-then-rename helpers: a killed process never leaves a half-written output behind.

`tempfile.mkstemp`/`mkdtemp` create 0600/0700 entries whatever the umask (they are meant to
be private); a model or a results file is meant to be shared, so the staged file or folder is
given the mode a plain `open`/`mkdir` would have had (0644/0755 under umask 022) before it is
renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


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
def atomic_directory(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty staging folder beside `target`; on success it becomes `target`.

    A non-empty existing `target` is an error unless `overwrite`, checked *before* any work.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target}: folder exists and is not empty (overwrite=True replaces it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        public_mode(staging, directory=True)
        yield staging
        _public_tree(staging)
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
