"""Command-line plumbing shared by `encode`, `evaluate` and `export`: where the model comes from.

--model NAME_OR_DIR              a Hugging Face hub id or local HF folder
--workdir RUN_DIR [--step N|best] a training run's checkpoint (latest by default)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distilface_jax import trained_model
from distilface_jax.cli.policy import VERBOSITY_HELP, UsageError
from distilface_jax.evaluation.inference import make_embed_fn
from distilface_jax.evaluation.inference_batches import DEFAULT_TOKENS_PER_ROW
from distilface_jax.interop import hf, st_folder
from distilface_jax.models.pooling import POOLERS
from distilface_jax.models.sentence_pipeline import PROJECTION, SentencePipeline

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
    parser.add_argument(
        "--dim",
        type=int,
        default=None,
        help="keep the first DIM coordinates of each embedding (a Matryoshka model), re-normalised when the "
        "model normalises (None: all)",
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


def load_model(args: argparse.Namespace, *, folder_truncation: bool = False) -> tuple[SentencePipeline, dict]:
    """(pipeline, params) of the model the arguments name, with the arguments' overrides:
    --pooler replaces the model's pooling, --max-length its truncation. `folder_truncation`:
    a --model folder keeps its own max_seq_length (export re-writes the folder as it is)."""
    if args.workdir:
        try:
            model = trained_model.load_run_model(args.workdir, step=args.step)
        except (FileNotFoundError, ValueError, KeyError) as error:
            raise UsageError(f"cannot load the run's checkpoint: {error}") from error
        pipeline = model.pipeline  # A distilled student's: its teacher's normalisation and truncation.
        if args.pooler is not None and args.pooler != pipeline.pooler:
            pipeline = pipeline.replace(pooler=args.pooler, apply_mlp=True)
        args.loaded_step = model.step  # For the embedder's label ('step N of WORKDIR').
        return pipeline.replace(max_length=args.max_length or pipeline.max_length), model.params
    try:
        model = hf.load_pretrained(args.model)
        # The folder's own sentence-transformers pipeline, unless --pooler says otherwise; mean
        # pooling for a plain HF folder. A module it cannot apply is an error, not a warning.
        pipeline, width_map = st_folder.load(
            Path(model.source), model.config, model.tokenizer, pooler=args.pooler, default_pooler="avg"
        )
    except (hf.ModelLoadError, OSError, ValueError) as error:
        raise UsageError(f"cannot load model: {error}") from error
    params = model.params if width_map is None else {**model.params, PROJECTION: width_map}
    # Truncation: --max-length, else the model's own limit (the folder's max_seq_length is read only
    # with `folder_truncation`).
    return pipeline.replace(max_length=args.max_length or (pipeline.max_length if folder_truncation else None)), params


def build_embed_fn(args: argparse.Namespace, *, normalize: bool = False, progress: bool = False):
    """The embedding function the model arguments describe; `normalize` adds unit length; its
    `label` names the model (for a run: 'step N' or 'best step N', the checkpoint it reads)."""
    check_model_arguments(args)
    dim = getattr(args, "dim", None)
    if dim is not None and dim < 1:
        raise UsageError(f"--dim must be >= 1, got {dim}")
    pipeline, params = load_model(args)
    if normalize:
        pipeline = pipeline.replace(normalize=True)
    if dim is not None:  # A Matryoshka prefix, re-normalised when the pipeline normalises (as the ONNX graph).
        full = pipeline.width_map or pipeline.encoder.hidden_size
        if dim > full:
            raise UsageError(f"--dim {dim}: the model's embeddings have {full} dimensions")
        pipeline = pipeline.replace(output_dim=dim)
    embed = make_embed_fn(
        pipeline, params, batch_size=args.batch_size, progress=progress, tokens_per_batch=args.tokens_per_batch
    )
    embed.label = args.model
    if args.workdir:  # A run's checkpoint: which one.
        embed.label = f"{'best step' if args.step == 'best' else 'step'} {args.loaded_step} of {args.workdir}"
    return embed
