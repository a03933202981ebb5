"""Distil all-MiniLM-L6-v2 into a layer-cut student, ours and sentence-transformers' side by side.

    PYTHONPATH=. python benchmarks/distill_minilm.py --teacher TEACHER_DIR \
        --train-file ../shared/data/wiki/wiki1m_for_simcse.head11914.txt --sts-dir ../shared/data/sts \
        --layers 0 3 5 --epochs 3 --out /tmp/distill_l3 --json results/distill_l3.json

In one process, one after the other on the same machine:
  1. the teacher's 7-task STS test table (our embedder, and sentence-transformers' encode);
  2. the student before training (the teacher's embeddings + the kept layers);
  3. ours: `python -m distilface_jax.train --config configs/distill_minilm_l3.py` (the issue's
     command), then the STS test table of the checkpoint after every epoch, and of the exported
     best student scored by sentence-transformers (an independent scorer);
  4. the peer: sentence-transformers' layer-reduction distillation (its
     `model_distillation_layer_reduction.py` recipe: a copy of the teacher with layers removed,
     `MSELoss` against `teacher.encode` of the corpus computed once), with the same layers, data,
     epochs, batch size, learning rate, schedule (linear decay, no warm-up), AdamW (weight decay
     0, clip 1.0), max length, dropout and dropped remainder; its STS table after every epoch;
  5. encode throughput (sentences/s) of student and teacher through `python -m distilface_jax.encode`
     (in-process, after one warm-up call that compiles).
Training time per epoch: ours is the sum of the step times the trainer logs (no compile, no
evaluation); the peer's is the wall time of its epoch (a callback; its saving excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distilface_jax.evaluation import sts
from distilface_jax.training.metrics import read_metrics


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def table(results: dict) -> dict:
    return (
        {key: round(float(results[key]), 2) for key in (*sts.TASKS, "avg")}
        if "STS12" in results
        else {key: round(float(value), 2) for key, value in results.items() if key != "details"}
    )


def our_scores(config, params, tokenizer, pooler, suite) -> dict:
    from distilface_jax.evaluation.inference import make_embed_fn
    from distilface_jax.models.sentence_pipeline import SentencePipeline

    embed = make_embed_fn(SentencePipeline(config, tokenizer, pooler=pooler), params)
    return table(sts.evaluate_suite(embed, suite))


def st_scores(model, suite) -> dict:
    sentences = sts.unique_sentences(suite)
    embeddings = model.encode(sentences, batch_size=128, convert_to_numpy=True)
    return table(sts.score_suite(suite, sentences, np.asarray(embeddings, np.float32)))


def run_ours(args, suite, teacher_dir: str) -> dict:
    from distilface_jax import trained_model

    workdir = args.out / "ours"
    from distilface_jax.training import data

    # The sentences the run reads: a file's non-blank lines, or a mixture's list (docs/data.md).
    steps_per_epoch = len(data.read_sentences(str(args.train_file))[1]) // args.batch_size
    command = [
        sys.executable,
        "-m",
        "distilface_jax.train",
        "--config",
        str(REPO / "configs/distill_minilm_l3.py"),
        "--workdir",
        str(workdir),
        f"--config.distill.teacher={teacher_dir}",
        f"--config.data.train_file={args.train_file}",
        f"--config.eval.sts_dir={args.sts_dir}",
        f"--config.distill.student_layers=[{','.join(map(str, args.layers))}]",
        f"--config.num_epochs={args.epochs}",
        f"--config.batch_size={args.batch_size}",
        f"--config.learning_rate={args.learning_rate}",
        f"--config.data.max_seq_length={args.max_seq_length}",
        f"--config.checkpoint_every={steps_per_epoch}",
        f"--config.keep_checkpoints={args.epochs}",
        f"--config.data.cache_dir={args.cache_dir or args.out / 'cache'}",
        f"--config.eval_every={args.eval_every or steps_per_epoch}",
        "--config.eval.final_test=False",
        *(f"--config.{item}" for item in args.override),
    ]  # The exported best student is scored below instead.
    log("ours: " + " ".join(command))
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    wall = time.perf_counter() - start
    records = [r for r in read_metrics(str(workdir)) if r.get("sentences_per_second")]
    previous, step_seconds = 0, 0.0
    for record in [r for r in read_metrics(str(workdir)) if "loss" in r]:
        timed = record["step"] - previous - (1 if previous == 0 else 0)  # The first step compiles.
        if record.get("sentences_per_second"):
            step_seconds += timed * args.batch_size / record["sentences_per_second"]
        previous = record["step"]
    del records
    epochs = {}
    for epoch in range(1, args.epochs + 1):
        model = trained_model.load_run_model(str(workdir), step=str(epoch * steps_per_epoch))
        epochs[epoch] = our_scores(model.config, model.params, model.tokenizer, model.pipeline.pooler, suite)
        log(f"ours epoch {epoch}: {epochs[epoch]}")
    student_dir = args.out / "ours_student"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "distilface_jax.export",
            "--workdir",
            str(workdir),
            "--step",
            "best",
            "--out",
            str(student_dir),
            "--overwrite",
        ],
        check=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    best = trained_model.load_run_model(str(workdir), step="best").step
    from sentence_transformers import SentenceTransformer

    exported = st_scores(SentenceTransformer(str(student_dir), device="cpu"), suite)
    log(f"ours exported best (step {best}) scored by sentence-transformers: {exported}")
    return {
        "workdir": str(workdir),
        "student_dir": str(student_dir),
        "steps_per_epoch": steps_per_epoch,
        "command_wall_seconds": wall,
        "train_step_seconds": step_seconds,
        "seconds_per_epoch": step_seconds / args.epochs,
        "epochs": epochs,
        "best_step": best,
        "exported_best_st_scored": exported,
    }


def peer_student(teacher_dir, layers, max_seq_length: int):
    """sentence-transformers' layer reduction: the teacher's folder with only `layers` kept."""
    import torch
    from sentence_transformers import SentenceTransformer

    student = SentenceTransformer(str(teacher_dir), device="cpu")
    auto_model = student[0].auto_model
    auto_model.encoder.layer = torch.nn.ModuleList(
        [layer for i, layer in enumerate(auto_model.encoder.layer) if i in layers]
    )
    auto_model.config.num_hidden_layers = len(layers)
    student.max_seq_length = max_seq_length
    return student


def peer_training_arguments(output_dir, *, learning_rate: float, batch_size: int, logging_steps: int, **length):
    """The peer's trainer settings, ours as far as its trainer has them (linear decay, no warm-up,
    no weight decay, clip 1.0); `length`: num_train_epochs=... or max_steps=..."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        save_strategy="no",
        logging_steps=logging_steps,
        seed=0,
        dataloader_drop_last=True,
        report_to="none",
        use_cpu=True,
        **length,
    )


def run_peer(args, suite, teacher_dir: str) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MSELoss
    from transformers import TrainerCallback

    from distilface_jax.evaluation.inference import make_embed_fn
    from distilface_jax.interop import hf
    from distilface_jax.models.sentence_pipeline import SentencePipeline

    torch.manual_seed(0)
    sentences = [line.strip() for line in open(args.train_file, encoding="utf-8") if line.strip()]
    if args.peer_reuses_teacher_cache:
        # The same numbers teacher.encode gives (same weights, mean pooling, Normalize, max length
        # 256); reused only to save one pass of the teacher on a shared CPU. Not a training cost.
        labels = np.load(next(Path(args.cache_dir or args.out / "cache").glob("teacher.*.npy")))
        teacher_seconds = None
    else:
        teacher = SentenceTransformer(teacher_dir, device="cpu")
        start = time.perf_counter()
        labels = teacher.encode(sentences, batch_size=128, convert_to_numpy=True)
        teacher_seconds = time.perf_counter() - start
    assert labels.shape[0] == len(sentences)
    student = peer_student(teacher_dir, args.layers, args.max_seq_length)
    dataset = Dataset.from_dict({"sentence": sentences, "label": labels.tolist()})
    epoch_dir = args.out / "peer"

    class EpochTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.started = [], None

        def on_epoch_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_epoch_end(self, state_args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)
            student.save(str(epoch_dir / f"epoch_{len(self.seconds)}"))

    timer = EpochTimer()
    training_args = peer_training_arguments(
        epoch_dir / "trainer",
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        logging_steps=50,
        num_train_epochs=args.epochs,
    )
    trainer = SentenceTransformerTrainer(
        model=student, args=training_args, train_dataset=dataset, loss=MSELoss(student), callbacks=[timer]
    )
    log("peer: training")
    trainer.train()
    epochs = {}
    for epoch in args.peer_eval_epochs or range(1, args.epochs + 1):
        model = hf.load_pretrained(str(epoch_dir / f"epoch_{epoch}"))
        epochs[epoch] = table(
            sts.evaluate_suite(make_embed_fn(SentencePipeline(model.config, model.tokenizer), model.params), suite)
        )
        log(f"peer epoch {epoch}: {epochs[epoch]} ({timer.seconds[epoch - 1]:.1f} s)")
    return {
        "teacher_encode_seconds": teacher_seconds,
        "seconds_per_epoch_each": timer.seconds,
        "seconds_per_epoch": float(np.mean(timer.seconds)),
        "epochs": epochs,
        "torch_threads": torch.get_num_threads(),
    }


def encode_throughput(args, student_workdir: str, teacher_dir: str) -> dict:
    from distilface_jax import encode

    result = {}
    lines = open(args.train_file, encoding="utf-8").read().split("\n")[: args.encode_lines]
    sentences_file = args.out / "encode_input.txt"
    sentences_file.write_text("\n".join(lines) + "\n")
    for name, source in (
        ("student", ["--workdir", student_workdir, "--step", "best"]),
        ("teacher", ["--model", teacher_dir]),
    ):
        argv = source + ["--input", str(sentences_file), "--output", str(args.out / f"{name}.npy")]
        encode.main(argv)  # Warm-up: loads and compiles every bucket shape.
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            encode.main(argv)
            timings.append(time.perf_counter() - start)
        count = len(lines)
        result[name] = {"seconds": min(timings), "sentences_per_second": count / min(timings)}
        log(f"encode {name}: {result[name]}")
    result["speedup"] = result["student"]["sentences_per_second"] / result["teacher"]["sentences_per_second"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--train-file", type=Path, required=True)
    parser.add_argument("--sts-dir", type=Path, default=Path("../shared/data/sts"))
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 3, 5])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-4)  # configs/distill_minilm_l3.py
    parser.add_argument("--max-seq-length", type=int, default=64)  # configs/distill_minilm_l3.py
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for the runs")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None, help="token/teacher cache (default: OUT/cache)")
    parser.add_argument("--encode-lines", type=int, default=1500, help="corpus lines timed through encode")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--resume-json",
        action="store_true",
        help="keep the tables and our run already recorded in --json (after a crash of a later part)",
    )
    parser.add_argument(
        "--peer-reuses-teacher-cache",
        action="store_true",
        help="label the peer's data with our cached teacher embeddings instead of teacher.encode",
    )
    parser.add_argument("--peer-eval-epochs", type=int, nargs="*", default=None, help="default: every epoch")
    parser.add_argument("--eval-every", type=int, default=0, help="dev evaluation cadence (default: once per epoch)")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--skip-teacher-table", action="store_true", help="e.g. for a second student")
    parser.add_argument("--skip-before", action="store_true", help="skip the untrained student's table")
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra config settings KEY=VALUE for our run (passed as --config.KEY=VALUE)",
    )
    args = parser.parse_args()
    args.train_file, args.sts_dir, args.out = args.train_file.resolve(), args.sts_dir.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    teacher_dir = str(Path(args.teacher).resolve())

    import jax
    import sentence_transformers
    import torch

    from distilface_jax.distill.student import cut_layers
    from distilface_jax.distill.teacher import load_teacher

    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    suite = sts.load_suite(args.sts_dir, mode="test")
    teacher = load_teacher(teacher_dir)
    if not args.skip_teacher_table:
        report["teacher"] = our_scores(
            teacher.config, teacher.params, teacher.tokenizer, teacher.pipeline.pooler, suite
        )
        log(f"teacher: {report['teacher']}")
    if not args.skip_before:
        config, params = cut_layers(teacher.config, teacher.params, args.layers)
        report["student_before_training"] = our_scores(
            config, params, teacher.tokenizer, teacher.pipeline.pooler, suite
        )
        log(f"student {args.layers} before training: {report['student_before_training']}")
        del params
    del teacher
    if args.resume_json and args.json.exists() and "ours" in json.loads(args.json.read_text()):
        report = dict(json.loads(args.json.read_text()), **{k: v for k, v in report.items() if k == "started"})
        log("ours: reusing the finished run recorded in " + str(args.json))
    else:
        report["ours"] = run_ours(args, suite, teacher_dir)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not args.skip_peer:
        report["peer"] = run_peer(args, suite, teacher_dir)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not args.skip_encode:
        report["encode"] = encode_throughput(args, report["ours"]["workdir"], teacher_dir)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    log(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
