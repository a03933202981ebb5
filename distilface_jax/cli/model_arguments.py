"""Command-line plumbing shared by `encode`, `evaluate` and `export`: where the model comes from.

--model NAME_OR_DIR              a Hugging Face hub id or local HF folder
--workdir RUN_DIR [--step N|best] a training run's checkpoint (latest by default)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from distilface_jax import trained_model
from distilface_jax.cli.policy import VERBOSITY_HELP, UsageError
from distilface_jax.evaluation.inference import PROJECTION, make_embed_fn
from distilface_jax.evaluation.inference_batches import DEFAULT_TOKENS_PER_ROW
from distilface_jax.interop import hf, st_folder
from distilface_jax.models.pooling import POOLERS

__all__ = [
    "UsageError",
    "STEP_HELP",
    "make_parser",
    "add_model_arguments",
    "check_step",
    "check_model_arguments",
    "load_model",
    "build_embed_fn",
]

STEP_HELP = (
    "with --workdir, which checkpoint: 'best' = the one with the highest STS-B dev score seen during "
    "training (WORKDIR/best/; needs eval_every > 0), a number = the checkpoint of that step, "
    "default: the latest checkpoint"
)


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help; an on/off flag's as "off" (the flag not given), not as
    the value its destination holds (`--no-progress` stores False into a default of True)."""

    def _get_help_string(self, action):
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{action.help} (default: off)"
        return super()._get_help_string(action)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser whose help shows every option's default; with -v/--verbosity."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=_DefaultsHelp)
    parser.add_argument("-v", "--verbosity", type=int, default=0, metavar="LEVEL", help=VERBOSITY_HELP)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model or --workdir [--step], --pooler, --batch-size, --tokens-per-batch, --max-length."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face hub id or local HF model folder")
    source.add_argument("--workdir", help="a training run's folder: use its checkpoint")
    parser.add_argument("--step", default=None, help=STEP_HELP)
    parser.add_argument(
        "--pooler",
        choices=POOLERS,
        default=None,
        help="sentence pooler (None: the run's eval pooler for --workdir; for --model the folder's "
        "sentence-transformers pooling, else avg)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="sentences per batch at most (short sentences; see --tokens-per-batch)",
    )
    parser.add_argument(
        "--tokens-per-batch",
        type=int,
        default=None,
        help="token budget of a batch: rows x padded length stays within it, so a batch of long "
        f"sentences holds fewer rows (None: --batch-size x {DEFAULT_TOKENS_PER_ROW})",
    )
    parser.add_argument(
        "--max-length", type=int, default=None, help="truncate to this many tokens (None: the model's own limit)"
    )


def check_step(step) -> None:
    """--step is 'best', a step number or absent: checked before anything is read or loaded."""
    if step is not None and step != "best" and not (step.isdigit() and step.isascii()):
        raise UsageError(f"--step must be a step number or 'best', got {step!r}")


def check_model_arguments(args: argparse.Namespace) -> None:
    """Every model argument that can be wrong by itself, before any file is read or model loaded."""
    check_step(args.step)
    if args.step is not None and not args.workdir:
        raise UsageError("--step goes with --workdir")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_length is not None and args.max_length < 2:
        raise UsageError(f"--max-length must be >= 2 (room for [CLS] and [SEP]), got {args.max_length}")
    if args.tokens_per_batch is not None and args.tokens_per_batch < 1:
        raise UsageError(f"--tokens-per-batch must be >= 1, got {args.tokens_per_batch}")


def load_model(args: argparse.Namespace):
    """(model with .config/.params/.tokenizer, pooler, apply_mlp, normalizes) that the arguments
    name; `normalizes` is True when a sentence-transformers folder ends in Normalize."""
    if args.workdir:
        try:
            model = trained_model.load_run_model(args.workdir, step=args.step)
        except (FileNotFoundError, ValueError, KeyError) as error:
            raise UsageError(f"cannot load the run's checkpoint: {error}") from error
        pooler, apply_mlp = model.pooler, model.apply_mlp
        if args.pooler is not None and args.pooler != model.pooler:
            pooler, apply_mlp = args.pooler, True
        return model, pooler, apply_mlp, model.normalize  # A distilled student normalises as its teacher.
    try:
        model = hf.load_pretrained(args.model)
    except (hf.ModelLoadError, OSError) as error:
        raise UsageError(f"cannot load model: {error}") from error
    folder = Path(model.source)
    described = st_folder.read_pooler(folder)
    # The folder's own sentence-transformers pooling, unless told otherwise; else mean pooling.
    pooler, apply_mlp = (args.pooler, True) if args.pooler else (described or ("avg", True))
    unsupported = st_folder.unsupported_modules(folder, model.config.hidden_size, linear_dense_supported=True)
    if unsupported:
        print(
            f"warning: {folder}: sentence-transformers modules not applied here: {', '.join(unsupported)}",
            file=sys.stderr,
        )
    projection = st_folder.read_linear_dense(folder)  # A distilled student's kept width map.
    if projection is not None:
        model = dataclasses.replace(model, params={**model.params, PROJECTION: projection})
    return model, pooler, apply_mlp, st_folder.normalizes(folder)


def build_embed_fn(args: argparse.Namespace, *, normalize: bool = False, progress: bool = False):
    """The embedding function the model arguments describe; its `label` names the model (for a
    run: 'step N' or 'best step N', the checkpoint it reads)."""
    check_model_arguments(args)
    model, pooler, apply_mlp, folder_normalizes = load_model(args)
    # Params carry a distilled student's width map only where it is part of the model.
    # A folder whose sentence-transformers pipeline normalises gets the same unit vectors here.
    embed = make_embed_fn(
        model.config,
        model.params,
        model.tokenizer,
        pooler=pooler,
        batch_size=args.batch_size,
        max_length=args.max_length or getattr(model, "max_length", None),
        normalize=normalize or folder_normalizes,
        progress=progress,
        apply_mlp=apply_mlp,
        tokens_per_batch=args.tokens_per_batch,
        project=PROJECTION in model.params,
    )
    embed.label = args.model
    if args.workdir:  # A run's checkpoint: which one (the model is a RunModel, with its step).
        embed.label = f"{'best step' if args.step == 'best' else 'step'} {model.step} of {args.workdir}"
    return embed
