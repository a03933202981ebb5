"""Encode throughput of a distilled student vs its teacher, through `encode`'s own embedding path.

    PYTHONPATH=. python benchmarks/distill_encode_speed.py --student EXPORTED_DIR --teacher TEACHER_DIR \
        --input sentences.txt [--lines 2000] [--rounds 3]

Both models go through `distilface_jax.encode`'s argument parsing and `cli.model_arguments.build_embed_fn`
(the same bucketed, jitted embedder `python -m distilface_jax.encode --model DIR` uses); loading
and the first (compiling) call are excluded, then the two are timed alternately, `--rounds`
times each, so a shared machine's load changes hit both alike. Reports the best round of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distilface_jax import encode
from distilface_jax.cli import model_arguments  # noqa: E402


def embedder(model_dir: str):
    parser = argparse.ArgumentParser()
    model_arguments.add_model_arguments(parser)
    return model_arguments.build_embed_fn(parser.parse_args(["--model", model_dir]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sentences = encode.read_sentences(args.input)[: args.lines]
    models = {"student": embedder(args.student), "teacher": embedder(args.teacher)}
    for embed in models.values():
        embed(sentences)  # compiles every bucket shape
    seconds = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, embed in models.items():
            start = time.perf_counter()
            embed(sentences)
            seconds[name].append(time.perf_counter() - start)
    report = {
        name: {"seconds": times, "sentences_per_second": len(sentences) / min(times)} for name, times in seconds.items()
    }
    report["speedup"] = report["student"]["sentences_per_second"] / report["teacher"]["sentences_per_second"]
    report["sentences"] = len(sentences)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
