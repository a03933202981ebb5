"""A kill at any moment never wedges a distillation run either, its teacher cache included: for
each of ~40 kill points of a real `train --config configs/distill_minilm_l3.py` run on a tiny
teacher (the teacher embeddings written to the user's cache folder, DISTILFACE_CACHE_DIR, and
half written there; distill.json; the rest as for SimCSE) the folders a `kill -9` leaves are
rerun, and every rerun completes with the uninterrupted run's parameters, sts_test.json,
metrics.jsonl rows and best step (fault_injection.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilface_jax.config.base import BUILTIN_TINY

import fault_injection
from helpers import ROOT, WORDS


def write_corpus(path: Path, lines: int = 48) -> Path:
    rng = np.random.default_rng(0)
    path.write_text("\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(lines)) + "\n")
    return path


def test_distillation_killed_anywhere_resumes_to_the_uninterrupted_result(tmp_path, tiny_bert_dir):
    workdir, cache = tmp_path / "run", tmp_path / "user_cache"
    corpus = write_corpus(tmp_path / "corpus.txt")
    flags = [
        f"--config={ROOT / 'configs' / 'distill_minilm_l3.py'}",
        "--config.max_steps=4",
        "--config.log_every=1",
        "--config.eval_every=2",
        "--config.checkpoint_every=2",
        "--config.keep_checkpoints=1",
        f"--config.distill.teacher={tiny_bert_dir}",
        "--config.distill.teacher_pooler=avg",
        "--config.distill.teacher_normalize=True",
        "--config.distill.student_layers=(1,)",
        # The recipe's token-level terms run the teacher in every step: off, to keep ~40 reruns
        # cheap (their resume is tested in test_distill_run.py); the queue stays on.
        "--config.distill.hidden_weight=0",
        "--config.distill.attention_weight=0",
        f"--config.data.train_file={corpus}",
        "--config.data.max_seq_length=16",
        f"--config.eval.sts_dir={BUILTIN_TINY}",
        "--config.eval.batch_size=32",
        "--config.batch_size=16",
        "--config.learning_rate=1e-3",
    ]
    env = fault_injection.environment(tmp_path / "compiled", ROOT, DISTILFACE_CACHE_DIR=str(cache))
    points, reference, report = fault_injection.kill_points_and_reruns(
        tmp_path, [workdir, cache], [*flags, f"--workdir={workdir}"], flags, env, ROOT
    )
    events = [event for event, _ in points]
    assert len(events) >= 30
    assert any(e.startswith("rename 1:.teacher.") for e in events), events  # the teacher cache's commit
    assert any(e.startswith("create 1:.teacher.") for e in events), events  # ... and its half-written file
    assert any(e.startswith("rename 0:.distill.json") for e in events), events
    fault_injection.check_every_rerun(report, reference, total_steps=4)
    print(f"distillation: {len(points)} kill points, reruns {sum(r['seconds'] for r in report):.0f} s")
