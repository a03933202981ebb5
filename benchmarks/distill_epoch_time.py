"""Training time per epoch, ours vs sentence-transformers' layer-reduction distillation, back to back.

    PYTHONPATH=. python benchmarks/distill_epoch_time.py --teacher TEACHER_DIR \
        --train-file ../shared/data/wiki/wiki1m_for_simcse.head11914.txt --cache-dir CACHE --out /tmp/timing

On a shared machine the load of other processes changes minute to minute, so the two trainers
are timed alternately (ours, peer, ours, peer, ...), each for `--steps` optimizer steps of the
same student (teacher layers `--layers`), batch, max length, learning rate and teacher targets
(cached teacher embeddings, the same numbers `teacher.encode` gives). Step time excludes the first
`--warmup` steps (our compile, the peer's first batches). Time per epoch = steps per epoch x mean step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def time_ours(args, round_index: int) -> float:
    """Mean seconds per step of `python -m distilface_jax.train` after the warm-up steps."""
    workdir = args.out / f"ours_{round_index}"
    command = [
        sys.executable,
        "-m",
        "distilface_jax.train",
        "--config",
        str(REPO / "configs/distill_minilm_l3.py"),
        "--workdir",
        str(workdir),
        f"--config.distill.teacher={args.teacher}",
        f"--config.data.train_file={args.train_file}",
        "--config.eval.sts_dir=unused",
        f"--config.distill.student_layers=[{','.join(map(str, args.layers))}]",
        f"--config.max_steps={args.steps}",
        f"--config.data.max_seq_length={args.max_seq_length}",
        f"--config.learning_rate={args.learning_rate}",
        f"--config.log_every={args.warmup}",
        "--config.eval_every=0",
        "--config.eval.final_test=False",
        f"--config.checkpoint_every={10 * args.steps}",
        f"--config.data.cache_dir={args.cache_dir}",
        *(f"--config.{item}" for item in args.override),
    ]
    subprocess.run(
        command,
        check=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from distilface_jax.training.metrics import read_metrics

    records = [r for r in read_metrics(str(workdir)) if "loss" in r]
    timed = [r for r in records if r["step"] > args.warmup]  # Windows after the first (compile) one.
    seconds = sum(args.warmup * 64 / r["sentences_per_second"] for r in timed)
    return seconds / (len(timed) * args.warmup)


def time_peer(args, labels, sentences) -> float:
    from datasets import Dataset
    from distill_minilm import peer_student, peer_training_arguments  # the recorded experiment's peer
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MSELoss
    from transformers import TrainerCallback

    student = peer_student(args.teacher, args.layers, args.max_seq_length)
    dataset = Dataset.from_dict({"sentence": sentences, "label": labels.tolist()})
    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    training_args = peer_training_arguments(
        args.out / "peer_trainer",
        learning_rate=args.learning_rate,
        batch_size=64,
        logging_steps=1000,
        max_steps=args.steps,
    )
    SentenceTransformerTrainer(
        model=student, args=training_args, train_dataset=dataset, loss=MSELoss(student), callbacks=[Stamp()]
    ).train()
    return (stamps[-1] - stamps[args.warmup - 1]) / (len(stamps) - args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--train-file", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True, help="holds our cached teacher embeddings")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 3, 5])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--max-seq-length", type=int, default=64, help="both students (the config's)")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="both students (the config's)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--override", nargs="*", default=[], help="extra KEY=VALUE config settings for ours")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sentences = [line.strip() for line in open(args.train_file, encoding="utf-8") if line.strip()]
    labels = np.load(next(args.cache_dir.glob("teacher.*.npy")))
    steps_per_epoch = len(sentences) // 64
    ours, peer = [], []
    for round_index in range(args.rounds):
        ours.append(time_ours(args, round_index))
        peer.append(time_peer(args, labels, sentences))
        print(f"round {round_index}: ours {ours[-1]:.3f} s/step, peer {peer[-1]:.3f} s/step", flush=True)
    report = {
        "ours_seconds_per_step": ours,
        "peer_seconds_per_step": peer,
        "steps_per_epoch": steps_per_epoch,
        "ours_seconds_per_epoch": steps_per_epoch * float(np.mean(ours)),
        "peer_seconds_per_epoch": steps_per_epoch * float(np.mean(peer)),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
