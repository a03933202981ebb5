"""SentEval STS evaluation of a model, from the command line.

    python -m distilface_jax.evaluate --model sentence-transformers/all-MiniLM-L6-v2 \
        --sts-dir data/senteval --pooler avg --json results/minilm.json
    python -m distilface_jax.evaluate --workdir runs/unsup_distilbert --step best --sts-dir data/senteval

Prints a SimCSE-README style table (Spearman x 100 of cosine similarity) and, with ``--json``,
writes ``{"STS12": .., ..., "avg": .., "details": {..}}``. Data errors and model-load failures
print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distilface_jax import cli_model, sts
from distilface_jax.atomic import atomic_file
from distilface_jax.metrics_writer import json_value

EXIT_USAGE = 2


class CliError(Exception):
    """An expected failure: reported as one line on stderr, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distilface_jax.evaluate",
        description="SentEval STS (SimCSE protocol): Spearman x 100 of cosine similarity.",
    )
    cli_model.add_model_arguments(parser)
    parser.add_argument("--sts-dir", required=True, type=Path, metavar="DIR",
                        help="SentEval data folder holding STS/ and SICK/ (launch/download_senteval_sts.sh)")
    parser.add_argument("--mode", default="test", choices=("test", "dev"),
                        help="test: the 7 SimCSE tasks; dev: STS-B dev + SICK trial")
    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help=f"subset of tasks (default: all of the mode); valid: {' '.join(sts.TASKS)}")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results (with details) here")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _load_embed_fn(args: argparse.Namespace) -> Any:
    """Model -> ``embed(list[str]) -> np.ndarray [N, H]``."""
    try:
        return cli_model.build_embed_fn(args)
    except cli_model.UsageError as e:
        raise CliError(str(e)) from None


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file beside ``path`` + ``os.replace``: a reader never sees half a file."""
    with atomic_file(path, "w") as f:
        json.dump(json_value(obj), f, indent=2, allow_nan=False)
        f.write("\n")


def run(args: argparse.Namespace) -> dict:
    """Load data, then the model; evaluate, print the table, write JSON. Raises ``CliError``."""
    # Data first: a wrong --sts-dir should fail in milliseconds, not after loading a model.
    try:
        suite = sts.load_suite(args.sts_dir, mode=args.mode, tasks=args.tasks)
    except ValueError as e:  # StsDataError, unknown task, STS12-16 in dev mode
        raise CliError(str(e)) from None
    embed_fn = _load_embed_fn(args)
    # Errors while embedding are bugs, not user errors: let them keep their traceback.
    results = sts.evaluate_suite(embed_fn, suite)
    print(sts.format_table(results))
    if args.json is not None:
        try:
            write_json_atomic(args.json, results)
        except OSError as e:
            raise CliError(f"cannot write {args.json}: {e}") from None
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
