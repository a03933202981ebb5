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

from distilface_jax.cli_model import UsageError, add_model_arguments, build_embed_fn


def read_sentences(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise UsageError(f"{path}: no such file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read ({error})") from error
    # Split on "\n" only (str.splitlines would also split on U+2028 and friends inside a line,
    # and row i must be line i as `wc -l` and editors count them); tolerate CRLF files.
    sentences = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if text.endswith("\n"):
        sentences.pop()
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
