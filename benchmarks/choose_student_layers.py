"""Which teacher layers should a cut student keep? Score every k-layer subset on STS-B *dev*.

    PYTHONPATH=. python benchmarks/choose_student_layers.py --teacher TEACHER_DIR \
        --sts-dir ../shared/data/sts --sizes 3 2 --json results/layer_choice.json

No training: each candidate is the teacher's embeddings plus the chosen layers, with the
teacher's pooling. Only the dev split is read (choosing on test would leak the test set into
the recipe). Prints candidates best first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from distilface_jax.distill.student import cut_layers
from distilface_jax.distill.teacher import load_teacher
from distilface_jax.evaluation import sts
from distilface_jax.evaluation.inference import make_embed_fn


def score_subsets(teacher, suite, size: int) -> list[dict]:
    results = []
    for layers in itertools.combinations(range(teacher.config.num_layers), size):
        config, params = cut_layers(teacher.config, teacher.params, layers)
        embed = make_embed_fn(teacher.pipeline.replace(encoder=config), params)
        scores = sts.evaluate_suite(embed, suite)
        results.append({"layers": list(layers), "STSBenchmark_dev": scores["STSBenchmark"]})
    return sorted(results, key=lambda row: -row["STSBenchmark_dev"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--sts-dir", default="../shared/data/sts")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 2])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    teacher = load_teacher(args.teacher)
    suite = sts.load_suite(args.sts_dir, mode="dev", tasks=["STSBenchmark"])
    start = time.perf_counter()
    full = make_embed_fn(teacher.pipeline, teacher.params)
    report = {"teacher_STSBenchmark_dev": sts.evaluate_suite(full, suite)["STSBenchmark"]}
    print(f"teacher ({teacher.config.num_layers} layers): STS-B dev {report['teacher_STSBenchmark_dev']:.2f}")
    for size in args.sizes:
        ranked = score_subsets(teacher, suite, size)
        report[f"size_{size}"] = ranked
        for row in ranked:
            print(f"  {size} layers {row['layers']}: STS-B dev {row['STSBenchmark_dev']:.2f}")
    report["seconds"] = time.perf_counter() - start
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
