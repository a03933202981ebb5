"""`python -m distilface_jax.encode`: a text file (one sentence per line) → an .npy of embeddings.

Row i of the output embeds line i of the input (blank lines included, so rows stay aligned).
Usage:
    python -m distilface_jax.encode --model NAME_OR_DIR --input sentences.txt --output emb.npy \
        [--pooler avg] [--batch-size 128] [--max-length N] [--normalize]
    python -m distilface_jax.encode --workdir RUN_DIR [--step N|best] --input ... --output ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from distilface_jax.models.pooling import POOLERS


class UsageError(ValueError):
    """A bad input the user can fix: printed as one line, exit status 2."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model or --workdir [--step], shared by `encode` and `evaluate`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face hub id or local HF model folder")
    source.add_argument("--workdir", help="a training run's folder: use its checkpoint")
    parser.add_argument("--step", default=None,
                        help="with --workdir: a checkpoint step number, 'best', or (default) the latest")
    parser.add_argument("--pooler", choices=POOLERS, default=None,
                        help="sentence pooler (default: avg for --model, the run's eval pooler for --workdir)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate to this many tokens (default: the model's own limit)")


def build_embed_fn(args: argparse.Namespace, *, normalize: bool = False, progress: bool = False):
    """The embedding function the model arguments describe."""
    from distilface_jax import hf
    from distilface_jax.inference import make_embed_fn

    if args.workdir:
        from distilface_jax import run_model
        model = run_model.load_run_model(args.workdir, step=args.step)
        pooler, apply_mlp = model.pooler, model.apply_mlp
        if args.pooler is not None and args.pooler != model.pooler:
            pooler, apply_mlp = args.pooler, True
    else:
        if args.step is not None:
            raise UsageError("--step goes with --workdir")
        try:
            model = hf.load_pretrained(args.model)
        except (hf.ModelLoadError, OSError) as error:
            raise UsageError(f"cannot load model: {error}") from error
        pooler, apply_mlp = args.pooler or "avg", True
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    return make_embed_fn(model.config, model.params, model.tokenizer, pooler=pooler, batch_size=args.batch_size,
                         max_length=args.max_length, normalize=normalize, progress=progress, apply_mlp=apply_mlp)


def read_sentences(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise UsageError(f"{path}: no such file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read ({error})") from error
    sentences = text.splitlines()
    if not any(line.strip() for line in sentences):
        raise UsageError(f"{path}: no sentences (the file is empty)")
    return sentences


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilface_jax.encode", description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--input", required=True, type=Path, help="UTF-8 text, one sentence per line")
    parser.add_argument("--output", required=True, type=Path, help="where to write the [N, H] float32 .npy")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    args = parser.parse_args(argv)
    try:
        sentences = read_sentences(args.input)
        embed = build_embed_fn(args, normalize=args.normalize, progress=True)
        embeddings = embed(sentences)
        from distilface_jax.atomic import atomic_file
        with atomic_file(args.output) as handle:  # No partial .npy if anything fails mid-way.
            np.save(handle, embeddings)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {embeddings.shape[0]} embeddings of size {embeddings.shape[1]} to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
