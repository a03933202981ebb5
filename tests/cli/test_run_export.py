"""From a training run to users: export, encode and evaluate straight from a workdir."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import transformers

from helpers import ROOT, cpu_env, train_command

SENTENCES = [
    "the young man plays the guitar in the park .",
    "a dog chases the red ball",
    "the old teacher reads a book at night",
    "every child eats bread",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs (MLP head train-only, and kept) start at once: their start-up and compile overlap."""
    folder = tmp_path_factory.mktemp("runs")
    processes = {}
    for mlp_train_only in (True, False):
        workdir = folder / f"run_{mlp_train_only}"
        command = train_command(
            workdir,
            "--config.max_steps=20",
            "--config.eval_every=10",
            "--config.checkpoint_every=10",
            "--config.eval.final_test=False",
            "--config.model.pooler=cls",
            f"--config.model.mlp_only_train={mlp_train_only}",
        )
        processes[mlp_train_only] = (
            workdir,
            subprocess.Popen(
                command, env=cpu_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
        )
    yield processes
    for _, process in processes.values():
        if process.poll() is None:  # A failed test left one unread: nothing outlives the module.
            process.kill()
            process.wait()


@pytest.fixture(scope="module", params=[True, False], ids=["mlp_train_only", "mlp_kept"])
def run_dir(request, runs):
    workdir, process = runs[request.param]
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return workdir, request.param


def cli(module, *args):
    result = subprocess.run(
        [sys.executable, "-m", f"distilface_jax.{module}", *args],
        env=cpu_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_export_loads_in_transformers_and_sentence_transformers_with_encode_embeddings(run_dir, tmp_path):
    workdir, mlp_train_only = run_dir
    out = tmp_path / "exported"
    cli("export", "--workdir", str(workdir), "--step", "best", "--out", str(out))
    assert (out / "2_Dense").exists() == (not mlp_train_only)  # The recipe decides the MLP head.
    model, info = transformers.AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
    cli(
        "encode",
        "--workdir",
        str(workdir),
        "--step",
        "best",
        "--input",
        str(tmp_path / "in.txt"),
        "--output",
        str(tmp_path / "run.npy"),
    )
    from_run = np.load(tmp_path / "run.npy")

    from sentence_transformers import SentenceTransformer

    from_st = SentenceTransformer(str(out), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(from_st, from_run, atol=1e-5, rtol=0)

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    import torch

    with torch.no_grad():
        cls = model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).last_hidden_state[:, 0].numpy()
    if not mlp_train_only:
        from safetensors.numpy import load_file

        dense = load_file(str(out / "2_Dense" / "model.safetensors"))
        cls = np.tanh(cls @ dense["linear.weight"].T + dense["linear.bias"])
    np.testing.assert_allclose(cls, from_run, atol=1e-5, rtol=0)


def test_evaluate_workdir_equals_evaluate_exported(run_dir, tmp_path):
    workdir, _ = run_dir
    sts_dir = workdir / "builtin" / "sts"
    out = tmp_path / "exported"
    cli("export", "--workdir", str(workdir), "--out", str(out))  # The latest checkpoint.
    cli("evaluate", "--workdir", str(workdir), "--sts-dir", str(sts_dir), "--json", str(tmp_path / "run.json"))
    cli("evaluate", "--model", str(out), "--sts-dir", str(sts_dir), "--json", str(tmp_path / "exported.json"))
    from_run, from_export = (json.loads((tmp_path / name).read_text()) for name in ("run.json", "exported.json"))
    for task in ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness", "avg"):
        assert from_run[task] == pytest.approx(from_export[task], abs=1e-6)


def test_export_errors_are_one_line(run_dir, tmp_path):
    workdir, _ = run_dir
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "distilface_jax.export",
            "--workdir",
            str(workdir),
            "--step",
            "7",
            "--out",
            str(tmp_path / "x"),
        ],
        env=cpu_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no checkpoint at step 7" in result.stderr
    assert not (tmp_path / "x").exists()


def test_onnx_export_of_a_run_equals_encode_and_loads_in_sentence_transformers_onnx_backend(run_dir, tmp_path):
    """`export --workdir --format onnx --quantize int8 --dim`: the graph's `sentence_embedding` is
    what `encode --workdir --dim` gives (the run's pooler and, when kept, its MLP head), and
    sentence-transformers' ONNX backend, which pools `last_hidden_state` itself, agrees."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    from distilface_jax import encode, export

    workdir, _ = run_dir
    out, embeddings = tmp_path / "onnx", tmp_path / "encode.npy"
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
    common = ["--workdir", str(workdir), "--step", "best", "--dim", "20"]
    assert export.main([*common, "--out", str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    assert encode.main([*common, "--input", str(tmp_path / "in.txt"), "--output", str(embeddings)]) == 0
    expected = np.load(embeddings)
    tokens = transformers.AutoTokenizer.from_pretrained(str(out))(SENTENCES, padding=True, return_tensors="np")
    inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    fp32, int8 = (
        ort.InferenceSession(str(out / "onnx" / name), providers=["CPUExecutionProvider"]).run(
            ["sentence_embedding"], inputs
        )[0]
        for name in ("model.onnx", "model_qint8_dynamic.onnx")
    )
    assert expected.shape == fp32.shape == (len(SENTENCES), 20)
    np.testing.assert_allclose(fp32, expected, atol=1e-5, rtol=0)
    backend = SentenceTransformer(str(out), backend="onnx", device="cpu").encode(SENTENCES)
    np.testing.assert_allclose(backend, expected, atol=1e-5, rtol=0)  # No Normalize here: a plain cut.
    cosine = np.sum(int8 * fp32, axis=1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() >= 0.99
