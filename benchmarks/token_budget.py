"""Token-budget batches vs fixed-row batches vs sentence-transformers, in one process.

    python benchmarks/token_budget.py [--model DIR] [--sts-dir ../shared/data/sts] \
        [--wiki ../shared/data/wiki/wiki1m_for_simcse.head11914.txt]

Two workloads: the 7-task STS suite (unique sentences), and a 10,000-line file of wiki
sentences with a few long lines (each several wiki lines joined, far above 256 tokens). Three
encoders of the same model: distilface_jax with the token budget (`tokens_per_batch`, the
default), distilface_jax with the previous fixed-row batches (`tokens_per_batch = batch_size x
max_length`: every batch holds batch_size rows whatever its length), and
`SentenceTransformer.encode`. Each distilface_jax variant runs once to compile (cold), then
timed (warm). Prints a markdown section (docs/benchmarks.md holds the recorded one).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sts_suite import default_model_dir  # noqa: E402


def long_line_file(wiki: Path, total: int = 10_000, long_lines: int = 5, join: int = 25) -> list[str]:
    lines = [line.strip() for line in wiki.read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = lines[: total - long_lines]
    for index in range(long_lines):  # Spread through the file, as a user's file would have them.
        long = " ".join(lines[-(index + 1) * join : len(lines) - index * join])
        sentences.insert((index + 1) * len(sentences) // (long_lines + 1), long)
    return sentences


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=default_model_dir())
    parser.add_argument("--sts-dir", type=Path, default=REPO.parent / "shared" / "data" / "sts")
    parser.add_argument(
        "--wiki", type=Path, default=REPO.parent / "shared" / "data" / "wiki" / "wiki1m_for_simcse.head11914.txt"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import jax
    import numpy as np
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    from distilface_jax.evaluation import inference, sts
    from distilface_jax.interop import hf
    from distilface_jax.models.sentence_pipeline import SentencePipeline

    torch.set_num_threads(args.threads)
    st_model = SentenceTransformer(args.model, device="cpu")
    max_length = st_model.max_seq_length
    model = hf.load_pretrained(args.model)
    variants = {
        "distilface_jax, token budget": None,  # the default: batch_size x DEFAULT_TOKENS_PER_ROW
        "distilface_jax, fixed rows (before)": args.batch_size * max_length,
    }
    suite = sts.load_suite(args.sts_dir)
    workloads = {
        "STS suite (7 tasks)": sts.unique_sentences(suite),
        "10k wiki lines + 5 long lines": long_line_file(args.wiki),
    }
    lines = []
    for workload, sentences in workloads.items():
        lengths = [len(ids) for ids in model.tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]]
        lines += [
            f"### {workload}: {len(sentences):,} sentences, tokens per sentence median "
            f"{int(np.median(lengths))}, max {max(lengths)} (truncated at {max_length})",
            "",
            "| encoder | cold s | warm s | sentences/s | shapes | max abs diff vs ST | STS avg |",
            "|---|---|---|---|---|---|---|",
        ]
        start = time.perf_counter()
        theirs = st_model.encode(
            sentences,
            batch_size=args.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
            normalize_embeddings=False,
        )
        st_s = time.perf_counter() - start
        results = {}
        for name, budget in variants.items():
            pipeline = SentencePipeline(model.config, model.tokenizer, normalize=True, max_length=max_length)
            embed = inference.make_embed_fn(pipeline, model.params, batch_size=args.batch_size, tokens_per_batch=budget)
            start = time.perf_counter()
            embed(sentences)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            ours = embed(sentences)
            warm = time.perf_counter() - start
            results[name] = ours
            avg = sts.score_suite(suite, sentences, ours)["avg"] if workload.startswith("STS") else None
            lines.append(
                f"| {name} | {cold:.1f} | **{warm:.1f}** | {len(sentences) / warm:,.0f} | "
                f"{len(embed.compiled_shapes)} | {np.abs(ours - theirs).max():.1e} | "
                f"{'' if avg is None else f'{avg:.2f}'} |"
            )
        avg = sts.score_suite(suite, sentences, theirs)["avg"] if workload.startswith("STS") else None
        lines.append(
            f"| sentence-transformers | - | **{st_s:.1f}** | {len(sentences) / st_s:,.0f} | - | - | "
            f"{'' if avg is None else f'{avg:.2f}'} |"
        )
        a, b = results.values()
        lines += ["", f"token budget vs fixed rows: max |embedding difference| {np.abs(a - b).max():.1e}", ""]
        print("\n".join(lines[-12:]), flush=True)
    header = [
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, torch {torch.__version__} (cpu, {args.threads} threads), transformers "
        f"{transformers.__version__}, sentence-transformers {sentence_transformers.__version__}",
        f"- model {args.model}, batch size {args.batch_size}, max length {max_length}, mean pooling + Normalize",
        "",
    ]
    print("\n".join(header + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
