"""The teacher's corpus embeddings, sharded: over this process's devices (8 simulated) and over
processes (2 local processes joined by jax.distributed), each equal to PyTorch's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distilface_jax.distill import teacher as teacher_lib
from distilface_jax.evaluation import inference

from helpers import ROOT, WORDS, save_tiny_hf_model

MAX_LENGTH = 16  # Two length buckets (8, 16): few shapes to compile.


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_model(tmp_path_factory.mktemp("teacher"), "bert", seed=1)


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    rng = np.random.default_rng(0)  # 37 lines: not a multiple of the devices or processes
    return [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(37)]


def torch_reference(teacher_dir: Path, sentences: list[str]) -> np.ndarray:
    """HF BertModel, mean pooling over real tokens, unit length: the teacher as configured."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(teacher_dir))
    model = transformers.AutoModel.from_pretrained(str(teacher_dir)).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_corpus_embedding_is_split_over_every_local_device(teacher_dir, sentences, monkeypatch):
    used = []
    original = inference.make_embed_fn

    def recording(*args, **kwargs):
        embed = original(*args, **kwargs)
        used.append(embed.num_devices)
        return embed

    monkeypatch.setattr(inference, "make_embed_fn", recording)
    teacher = teacher_lib.load_teacher(str(teacher_dir), pooler="avg", normalize=True, max_length=MAX_LENGTH)
    embeddings = teacher_lib.embed_corpus(teacher, sentences, batch_size=2)  # 16 rows a batch over 8 devices
    assert used == [8]
    np.testing.assert_allclose(embeddings, torch_reference(teacher_dir, sentences), atol=2e-5)


def test_strided_slices_reassemble_in_corpus_order():
    table = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    count = 3
    gathered = np.zeros((count, 3, 2), np.float32)  # ceil(7 / 3) rows each, zero-padded
    for process in range(count):
        gathered[process, : len(table[process::count])] = table[process::count]
    np.testing.assert_array_equal(teacher_lib.assemble_strided(gathered, 7), table)


_WORKER = """
import sys, numpy as np, jax
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from distilface_jax.distill import teacher as teacher_lib
teacher = teacher_lib.load_teacher(sys.argv[3], pooler="avg", normalize=True, max_length=16)
sentences = open(sys.argv[4]).read().splitlines()
embeddings, hit = teacher_lib.cached_embeddings(teacher, sentences, sys.argv[5],
    compute=lambda t, s: teacher_lib.embed_corpus(t, s, batch_size=2))
assert not hit, "one host lacked the cache: every host must compute"
np.save(sys.argv[6], embeddings)
"""


def test_two_processes_each_embed_half_and_both_hold_the_whole_table(teacher_dir, sentences, tmp_path):
    """2 processes x 2 devices. Process 0 finds a (stale) cache file in its own cache folder,
    process 1 none: both must compute (a collective), neither may hang or read the stale file."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n")
    stale = tmp_path / "host0" / "teacher.npy"
    stale.parent.mkdir()
    np.save(stale, np.zeros((len(sentences), 32), np.float32))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
    )
    env.pop("JAX_NUM_CPU_DEVICES", None)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                address,
                str(process),
                str(teacher_dir),
                str(corpus),
                str(tmp_path / f"host{process}" / "teacher.npy"),
                str(tmp_path / f"out{process}.npy"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for process in range(2)
    ]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    reference = torch_reference(teacher_dir, sentences)
    for process in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"out{process}.npy"), reference, atol=2e-5)
        np.testing.assert_allclose(np.load(tmp_path / f"host{process}" / "teacher.npy"), reference, atol=2e-5)


def test_cache_write_removes_only_abandoned_temporary_files(tmp_path):
    """A cache write killed before its rename leaves `.teacher.*.tmp-*`; the next write in the
    (possibly shared) folder deletes such files once they are an hour old, never a fresh one
    (another run may be writing it), and never a finished cache file."""
    import types

    folder = tmp_path / "cache"
    folder.mkdir()
    abandoned, writing = folder / ".teacher.a.npy.tmp-x1", folder / ".teacher.b.npy.tmp-x2"
    finished = folder / "teacher.c.npy"
    for path in (abandoned, writing, finished):
        path.write_bytes(b"")
    two_hours_ago = os.path.getmtime(abandoned) - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))
    os.utime(finished, (two_hours_ago, two_hours_ago))
    teacher = types.SimpleNamespace(width=4)
    embeddings, hit = teacher_lib.cached_embeddings(
        teacher, ["a", "b"], str(folder / "teacher.d.npy"), compute=lambda t, s: np.ones((len(s), 4))
    )
    assert not hit and embeddings.shape == (2, 4)
    assert sorted(p.name for p in folder.iterdir()) == sorted([writing.name, finished.name, "teacher.d.npy"])
