"""Command-line plumbing shared by `encode`, `evaluate` and `export`: where the model comes from.

--model NAME_OR_DIR              a Hugging Face hub id or local HF folder
--workdir RUN_DIR [--step N|best] a training run's checkpoint (latest by default)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from distilface_jax import trained_model
from distilface_jax.cli.policy import VERBOSITY_HELP, UsageError
from distilface_jax.evaluation.inference import PROJECTION, make_embed_fn
from distilface_jax.evaluation.inference_batches import DEFAULT_TOKENS_PER_ROW
from distilface_jax.interop import hf, st_folder
from distilface_jax.models.pooling import POOLERS

__all__ = ["UsageError", "STEP_HELP", "make_parser", "add_model_arguments", "load_model", "build_embed_fn"]

STEP_HELP = (
    "with --workdir, which checkpoint: 'best' = the one with the highest STS-B dev score seen during "
    "training (WORKDIR/best/; needs eval_every > 0), a number = the checkpoint of that step, "
    "default: the latest checkpoint"
)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser whose help shows every option's default; with -v/--verbosity."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
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
    if args.step is not None:
        raise UsageError("--step goes with --workdir")
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
    """The embedding function the model arguments describe."""

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_length is not None and args.max_length < 2:
        raise UsageError(f"--max-length must be >= 2 (room for [CLS] and [SEP]), got {args.max_length}")
    if args.tokens_per_batch is not None and args.tokens_per_batch < 1:
        raise UsageError(f"--tokens-per-batch must be >= 1, got {args.tokens_per_batch}")
    dim = getattr(args, "dim", None)
    if dim is not None and dim < 1:
        raise UsageError(f"--dim must be >= 1, got {dim}")
    model, pooler, apply_mlp, folder_normalizes = load_model(args)
    normalize = normalize or folder_normalizes
    if dim is None and args.model:  # A folder exported with --dim keeps that width, as in sentence-transformers.
        dim = st_folder.read_truncate_dim(Path(model.source))
    width = np.shape(model.params[PROJECTION]["kernel"])[1] if PROJECTION in model.params else model.config.hidden_size
    if dim is not None and dim > width:
        raise UsageError(f"--dim {dim}: the model's embeddings have {width} dimensions")
    # Params carry a distilled student's width map only where it is part of the model.
    # A folder whose sentence-transformers pipeline normalises gets the same unit vectors here.
    embed = make_embed_fn(
        model.config,
        model.params,
        model.tokenizer,
        pooler=pooler,
        batch_size=args.batch_size,
        max_length=args.max_length or getattr(model, "max_length", None),
        normalize=normalize and dim is None,
        progress=progress,
        apply_mlp=apply_mlp,
        tokens_per_batch=args.tokens_per_batch,
        project=PROJECTION in model.params,
    )
    return embed if dim is None else truncated(embed, dim, normalize)


def truncated(embed, dim: int, normalize: bool):
    """`embed` keeping the first `dim` coordinates, then L2-normalised when `normalize` (the
    ONNX graph's order: a Matryoshka prefix is re-normalised, not cut from a unit vector)."""

    def embed_prefix(sentences):
        embeddings = embed(sentences)[:, :dim]  # [N, dim]
        if normalize:
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        return np.ascontiguousarray(embeddings, dtype=np.float32)

    embed_prefix.__dict__.update(embed.__dict__)  # compiled_shapes, max_length, num_devices
    return embed_prefix
