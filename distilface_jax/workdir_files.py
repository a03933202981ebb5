"""Small files of a workdir, on a local disk or in a bucket (gs://, through `etils.epath`).

Orbax writes checkpoints to either itself; these helpers do the same for the run's JSON
files and model description, so a TPU pod can use a `gs://` workdir end to end (bucket paths
need `gcsfs` installed; `launch/tpu_pod.sh` installs it on every TPU worker).
"""

from __future__ import annotations

import os
import tempfile

from etils import epath

from distilface_jax.atomic import atomic_file


def path(workdir: str, *parts: str) -> epath.Path:
    return epath.Path(workdir).joinpath(*parts)


def is_remote(workdir: str) -> bool:
    return "://" in str(workdir)


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
