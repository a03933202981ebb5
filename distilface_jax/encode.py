"""`python -m distilface_jax.encode`: a text file (one sentence per line) → an .npy of embeddings.

Row i of the output embeds line i of the input (blank lines included, so rows stay aligned).
Usage:
    python -m distilface_jax.encode --model NAME_OR_DIR --input sentences.txt --output emb.npy \
        [--pooler avg] [--batch-size 128] [--max-length N] [--normalize] [--dim D]
    python -m distilface_jax.encode --workdir RUN_DIR [--step N|best] --input ... --output ...

--step best is the run's checkpoint with the highest STS-B dev score (WORKDIR/best/); a number
is that step's checkpoint; without --step, the latest. Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from distilface_jax.cli.model_arguments import add_model_arguments, build_embed_fn, check_model_arguments, make_parser
from distilface_jax.cli.policy import UsageError, check_output_file, configure_output, run_main
from distilface_jax.run_folder import atomic_file


def read_sentences(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise UsageError(f"{path}: no such file") from error
    except IsADirectoryError as error:
        raise UsageError(f"{path}: is a folder, not a text file") from error
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise UsageError(f"{path}: line {line}: not UTF-8 (byte 0x{error.object[error.start]:02x})") from error
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error})") from error
    # Split on "\n" only (str.splitlines would also split on U+2028 and friends inside a line,
    # and row i must be line i as `wc -l` and editors count them); tolerate CRLF files.
    sentences = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if text.endswith("\n"):
        sentences.pop()
    if not any(line.strip() for line in sentences):
        raise UsageError(f"{path}: no sentences (the file {'is empty' if not text else 'holds only blank lines'})")
    return sentences


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser("python -m distilface_jax.encode", __doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--input", required=True, type=Path, help="UTF-8 text, one sentence per line")
    parser.add_argument("--output", required=True, type=Path, help="where to write the [N, H] float32 .npy")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    args = parser.parse_args(argv)
    if argv is None:  # Run as the program: process-wide output settings (not when a test calls main).
        configure_output(args.verbosity)
    return run_main(lambda: _encode(args))


def _encode(args) -> int:
    # Arguments, inputs and the output's place first: a mistake fails in milliseconds, not after
    # the model loads or the encoding.
    check_model_arguments(args)
    sentences = read_sentences(args.input)
    check_output_file(args.output, "--output")
    embed = build_embed_fn(args, normalize=args.normalize, progress=True)
    embeddings = embed(sentences)
    try:
        with atomic_file(args.output) as handle:  # No partial .npy if anything fails mid-way.
            np.save(handle, embeddings)
    except OSError as error:
        raise UsageError(f"--output {args.output}: cannot write ({error})") from error
    print(f"wrote {embeddings.shape[0]} embeddings of size {embeddings.shape[1]} to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
