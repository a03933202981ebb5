"""The distillation ablation: today's recipe, one component added per row, then the data mixture.

    PYTHONPATH=. python benchmarks/distill_ablation.py --teacher TEACHER_DIR \
        --train-file data/wiki/wiki1m_for_simcse.head11914.txt \
        --mixture configs/data/uniform_11914.mixture.json --sts-dir data/sts \
        --out /tmp/ablation --results results/distill_ablation --rows C C+relational ...

Every row is one `benchmarks/distill_minilm.py` run (ours only): `python -m distilface_jax.train
--config configs/distill_minilm_l3.py` with the row's settings, then `export --step best`
scored by sentence-transformers on the SentEval STS protocol (an independent scorer). Same
student layers, batch, learning rate, schedule and number of steps in every row; a row on the
mixture reads a corpus of the same size. Results: one JSON per row and seed in --results,
and `summary.md` (the STS table, mean ± sd over seeds where a row ran several).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness", "avg")

# Today's recipe before this ablation (recipe C of docs/distillation.md): the config's settings
# with every term this ablation adds switched off, so the rows do not depend on the config's choice.
RECIPE_C = {
    "model.dropout": "0.0",
    "model.attention_dropout": "0.0",
    "distill.contrastive_weight": "0.01",
    "distill.queue_steps": "0",
    "distill.relational_weight": "0.0",
    "distill.hidden_weight": "0.0",
    "distill.attention_weight": "0.0",
}
# Weights chosen so each added term equals the MSE term at the first step on this data (mse
# 0.0016; relational KL 0.80 at τ 0.05, hidden cosine 0.17, attention + value KL 0.57 at weight
# 1); the relational term also at τ = 1, where it matches every similarity of the batch rather
# than the nearest few (KL ≈ ½ var of the cosine differences: ~0.003).
ROWS = {
    "C": {},
    "C+relational": {"distill.relational_weight": "0.002"},
    "C+relational soft": {"distill.relational_weight": "0.5", "distill.relational_temperature": "1.0"},
    "C+queue": {"distill.queue_steps": "16"},
    "C+hidden": {"distill.hidden_weight": "0.01"},
    "C+attention": {"distill.attention_weight": "0.003"},
}


def row_settings(name: str) -> tuple[tuple[str, ...], bool]:
    """(config overrides, on the mixture?) of a row name: a ROWS name, optionally '+mixture' and
    '+'-joined ROWS suffixes, e.g. 'C+relational x10+queue+mixture'."""
    parts = name.split("+")
    if parts[0] != "C":
        raise SystemExit(f"row {name!r}: rows start from C")
    overrides, mixture = dict(RECIPE_C), False
    for part in parts[1:]:
        if part == "mixture":
            mixture = True
        elif "C+" + part in ROWS:
            overrides.update(ROWS["C+" + part])
        else:
            raise SystemExit(f"row {name!r}: unknown component {part!r} (known: {', '.join(ROWS)}, mixture)")
    return tuple(f"{key}={value}" for key, value in overrides.items()), mixture


def _slug(name: str, seed: int) -> str:
    return name.replace(" ", "_").replace("+", "-") + f".seed{seed}"


def run_row(args, name: str, seed: int) -> dict:
    slug = _slug(name, seed)
    result = args.results / f"{slug}.json"
    if result.exists():
        return json.loads(result.read_text())
    overrides, mixture = row_settings(name)
    command = [
        sys.executable,
        str(REPO / "benchmarks/distill_minilm.py"),
        f"--teacher={args.teacher}",
        f"--train-file={args.mixture if mixture else args.train_file}",
        f"--sts-dir={args.sts_dir}",
        f"--epochs={args.epochs}",
        f"--eval-every={args.eval_every}",
        "--layers",
        *map(str, args.layers),
        f"--out={args.out / slug}",
        f"--json={result}",
        f"--cache-dir={args.cache_dir}",
        "--skip-peer",
        "--skip-encode",
        "--skip-teacher-table",
        "--skip-before",
        "--override",
        *overrides,
        f"seed={seed}",
    ]
    print(f"row {name} seed {seed}: " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return json.loads(result.read_text())


def summary(rows: dict[str, list[dict]]) -> str:
    lines = [
        "| row | seeds | " + " | ".join(TASKS[:-1]) + " | **avg** |",
        "|---|---|" + "---|" * len(TASKS),
    ]
    for name, runs in rows.items():
        tables = [run["ours"]["exported_best_st_scored"] for run in runs]
        cells = []
        for task in TASKS:
            values = [table[task] for table in tables]
            mean = statistics.fmean(values)
            sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            cells.append(f"**{mean:.2f}{sd}**" if task == "avg" else f"{mean:.2f}")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--train-file", type=Path, required=True, help="today's corpus (wiki lines)")
    parser.add_argument("--mixture", type=Path, help="the corpus of the '+mixture' rows (a file or mixture spec)")
    parser.add_argument("--sts-dir", type=Path, required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 3, 5])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=0, help="dev evaluation cadence (0: once per epoch)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for the runs")
    parser.add_argument("--results", type=Path, required=True, help="folder of the per-row JSON and summary.md")
    parser.add_argument("--cache-dir", type=Path, required=True, help="teacher/token cache shared by the rows")
    parser.add_argument("--summary-only", action="store_true", help="write summary.md from the rows already run")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    for name in args.rows:
        row_settings(name)  # every row name checked before the first run
    if args.summary_only:
        found = {name: [args.results / f"{_slug(name, seed)}.json" for seed in args.seeds] for name in args.rows}
        rows = {name: [json.loads(p.read_text()) for p in paths if p.exists()] for name, paths in found.items()}
        rows = {name: runs for name, runs in rows.items() if runs}
    else:
        rows = {name: [run_row(args, name, seed) for seed in args.seeds] for name in args.rows}
    (args.results / "summary.md").write_text(summary(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()
