"""SentEval STS evaluation of a model, from the command line.

    python -m distilface_jax.evaluate --model sentence-transformers/all-MiniLM-L6-v2 \
        --sts-dir data/senteval --pooler avg --json results/minilm.json
    python -m distilface_jax.evaluate --workdir runs/unsup_distilbert --step best --sts-dir data/senteval

Prints a SimCSE-README style table (Spearman x 100 of cosine similarity) and, with ``--json``,
writes ``{"STS12": .., ..., "avg": .., "details": {..}}``. Data errors and model-load failures
print one line on stderr and exit with status 2. ``--step best`` is the run's checkpoint with the
highest STS-B dev score; a number is that step's checkpoint; without ``--step``, the latest.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distilface_jax.cli import model_arguments
from distilface_jax.cli.policy import UsageError, check_output_file, configure_output, run_main
from distilface_jax.evaluation import sts
from distilface_jax.run_folder import atomic_file
from distilface_jax.training.metrics import json_value


def build_parser() -> argparse.ArgumentParser:
    parser = model_arguments.make_parser(
        "python -m distilface_jax.evaluate", "SentEval STS (SimCSE protocol): Spearman x 100 of cosine similarity."
    )
    model_arguments.add_model_arguments(parser)
    parser.add_argument(
        "--sts-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="SentEval data folder holding STS/ and SICK/ (launch/download_senteval_sts.sh)",
    )
    parser.add_argument(
        "--mode", default="test", choices=("test", "dev"), help="test: the 7 SimCSE tasks; dev: STS-B dev + SICK trial"
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK",
        help=f"subset of tasks (default: all of the mode); valid: {' '.join(sts.TASKS)}",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results (with details) here")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar while embedding"
    )
    return parser


def _load_embed_fn(args: argparse.Namespace) -> tuple[Any, str]:
    """Model -> (``embed(list[str]) -> np.ndarray [N, H]``, what it is: 'step N of RUN' or the model)."""
    embed = model_arguments.build_embed_fn(args, progress=getattr(args, "progress", False))
    return embed, embed.label


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file beside ``path`` + ``os.replace``: a reader never sees half a file."""
    with atomic_file(path, "w") as f:
        json.dump(json_value(obj), f, indent=2, allow_nan=False)
        f.write("\n")


def run(args: argparse.Namespace) -> dict:
    """Load data, then the model; evaluate, print the table, write JSON. Raises ``UsageError``."""
    # Arguments and data first: a wrong --step or --sts-dir should fail in milliseconds, not
    # after loading a model.
    model_arguments.check_model_arguments(args)
    try:
        suite = sts.load_suite(args.sts_dir, mode=args.mode, tasks=args.tasks)
    except ValueError as e:  # StsDataError, unknown task, STS12-16 in dev mode
        raise UsageError(str(e)) from None
    if args.json is not None:
        check_output_file(args.json, "--json")
    embed_fn, label = _load_embed_fn(args)
    # Errors while embedding are bugs, not user errors: let them keep their traceback.
    print(f"evaluating {len(suite)} tasks ({args.mode}) ...", file=sys.stderr)
    results = sts.evaluate_suite(embed_fn, suite)
    print(sts.format_table(results, title=f"STS {args.mode}, {label}"))
    if args.json is not None:
        try:
            write_json_atomic(args.json, results)
        except OSError as e:
            raise UsageError(f"cannot write {args.json}: {e}") from None
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None:  # Run as the program: process-wide output settings (not when a test calls main).
        configure_output(args.verbosity)
    return run_main(lambda: _run_status(args))


def _run_status(args: argparse.Namespace) -> int:
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
