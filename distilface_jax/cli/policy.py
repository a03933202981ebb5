"""What every entry point shares: one error path, one output policy.

Errors: a user mistake (a missing file, a misspelt key, a folder in the way) raises `UsageError`
anywhere below a CLI's `main`; `run_main` prints it as one line, `error: ...`, and exits 2. A
Ctrl-C that reaches `run_main` prints one line and exits 130 (128 + SIGINT), as shells expect.

Output: at the default verbosity 0 only the program's own lines are printed: third-party
warnings and progress bars (absl/Orbax, transformers, datasets, XLA's C++ logs) are silenced.
`--verbosity 1` (`-v 1`) lets library warnings through, `--verbosity 2` their info lines too.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

from distilface_jax.training.interrupts import EXIT_INTERRUPTED  # noqa: F401  (re-exported: train.py, the CLIs)

EXIT_USAGE = 2
VERBOSITY_HELP = "0: the program's own lines only; 1: also library warnings; 2: also library info lines"


class UsageError(ValueError):
    """A bad input the user can fix: printed as one line `error: ...`, exit status 2."""


class _OwnLines(logging.Formatter):
    """Our messages as plain lines; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a replaced or captured stream included)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_output(verbosity: int = 0) -> None:
    """Sets the output policy above. Call first thing in a CLI: the environment variables must
    be set before the libraries they configure are imported (XLA reads its own at start-up)."""
    library_level = {0: logging.ERROR, 1: logging.WARNING}.get(verbosity, logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", {0: "2", 1: "1"}.get(verbosity, "0"))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", logging.getLevelName(library_level).lower())
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1" if verbosity < 1 else "")
    os.environ.setdefault("DATASETS_VERBOSITY", logging.getLevelName(library_level).lower())
    if verbosity < 2:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for name in ("absl", "jax", "orbax", "transformers", "datasets", "huggingface_hub", "etils", "filelock"):
        logging.getLogger(name).setLevel(library_level)
    try:
        from absl import logging as absl_logging  # Orbax logs through absl's own verbosity.

        absl_logging.set_verbosity({logging.ERROR: "error", logging.WARNING: "warning"}.get(library_level, "info"))
    except ImportError:
        pass
    for name, module in (("transformers", "transformers.utils.logging"), ("datasets", "datasets.utils.logging")):
        if name in sys.modules:  # Already imported: its environment variable came too late.
            sys.modules[module].set_verbosity(library_level)
    if verbosity < 1:
        warnings.filterwarnings("ignore")
    ours = logging.getLogger("distilface_jax")
    if not any(isinstance(handler.formatter, _OwnLines) for handler in ours.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_OwnLines())
        ours.addHandler(handler)
    ours.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    ours.propagate = False  # Not through absl's root handler ("I1127 12:00:00 ... file.py:12]").


def run_main(main: Callable[[], int]) -> int:
    """Runs a CLI's body: `UsageError` → one line, exit 2; Ctrl-C → one line, exit 130."""
    try:
        return main()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def check_output_file(path, option: str) -> None:
    """An output file's place is usable: not a folder, and no file where its folder should be.
    Checked before the work that produces it."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    if parent is not None and not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: {parent} is not writable")
