"""Configs and the `train` entry point: every recipe parses and builds; the tiny one runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, cpu_env, load_config, train_command

CONFIGS = sorted((ROOT / "configs").glob("*.py"))
REQUIRED_KEYS = (
    "batch_size",
    "max_steps",
    "log_every",
    "eval_every",
    "seed",
    "learning_rate",
    "model.dropout",
    "model.attention_dropout",
    "model.name_or_path",
    "data.train_file",
)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_parses_and_builds(path, tmp_path):
    from distilface_jax.models.sentence_model import SentenceEncoder
    from distilface_jax.trained_model import eval_pooling
    from distilface_jax.training.optimizer import OptimizerSettings, make_optimizer

    config = load_config(path)
    for key in REQUIRED_KEYS:
        node = config
        for part in key.split("."):
            node = node[part]
    assert path.read_text().startswith('"""') and "python -m distilface_jax.train" in path.read_text()
    optimizer, schedule = make_optimizer(OptimizerSettings.from_config(config), 10)
    assert float(schedule(0)) == pytest.approx(config.learning_rate) and float(schedule(10)) == 0.0
    pooler, _ = eval_pooling(config.model)
    assert pooler in ("cls", "avg", "cls_before_pooler", "avg_first_last", "avg_top2")
    assert config.data.format in ("unsup", "sup")
    assert config.batch_size % 8 == 0  # Divisible by any power-of-two device count up to 8.
    if path.stem.startswith("distill"):  # Distillation: the default teacher, a layer cut.
        assert config.distill.teacher == "sentence-transformers/all-MiniLM-L6-v2"
        assert config.distill.student_layers and config.model.pooler == "avg"
    elif path.stem != "tiny":  # The real recipes: SimCSE's published hyper-parameters.
        assert config.loss.temperature == 0.05 and config.model.pooler == "cls"
        assert (config.batch_size, config.learning_rate, config.num_epochs) in ((64, 3e-5, 1), (512, 5e-5, 3))
        assert config.model.mlp_only_train == (config.data.format == "unsup")
    else:
        from distilface_jax.training.initial_model import build_initial_model

        encoder_config, params, _ = build_initial_model(config, str(tmp_path))
        SentenceEncoder(encoder_config)  # builds


def test_tiny_config_runs_end_to_end(tmp_path):
    """The README's first command, on 2 CPU cores: train → dev evals → best checkpoint → STS test."""
    workdir = tmp_path / "run"
    # A relative --workdir, as the README's first command uses (Orbax itself wants absolute paths).
    command = [arg if not arg.startswith("--workdir") else "--workdir=run" for arg in train_command(workdir)]
    result = subprocess.run(command, env=cpu_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    dev = [r for r in records if r.get("split") == "dev"]
    test = [r for r in records if r.get("split") == "test"]
    assert [r["step"] for r in train] == list(range(20, 121, 20))
    assert all({"learning_rate", "sentences_per_second", "loss"} <= set(r) for r in train)
    assert train[-1]["loss"] < train[0]["loss"]  # It learns.
    assert [r["step"] for r in dev] == [40, 80, 120] and all("STSBenchmark" in r for r in dev)
    assert len(test) == 1 and set(test[0]) >= {"STS12", "STS16", "STSBenchmark", "SICKRelatedness", "avg"}
    results = json.loads((workdir / "sts_test.json").read_text())
    assert results["avg"] == pytest.approx(test[0]["avg"])
    info = json.loads((workdir / "run_info.json").read_text())
    assert info["num_devices"] == 1 and info["num_processes"] == 1 and info["config"]["max_steps"] == 120
    assert (workdir / "best").is_dir() and (workdir / "checkpoints" / "120").is_dir()
    assert list((workdir / "tensorboard").iterdir())
    assert "STSBenchmark" in result.stdout  # The final table is printed.

    # Launching the finished run again changes nothing (no second test line, no new checkpoint).
    before = (workdir / "metrics.jsonl").read_text(), sorted(os.listdir(workdir / "checkpoints"))
    again = subprocess.run(command, env=cpu_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert ((workdir / "metrics.jsonl").read_text(), sorted(os.listdir(workdir / "checkpoints"))) == before


def test_unknown_config_key_is_an_error(tmp_path):
    result = subprocess.run(
        train_command(tmp_path / "run", "--config.learning_rat=1e-3"),
        env=cpu_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "learning_rat" in result.stderr
    assert not (tmp_path / "run").exists()


def test_missing_training_file_is_named(tmp_path):
    result = subprocess.run(
        train_command(tmp_path / "run", f"--config.data.train_file={tmp_path}/nope.txt"),
        env=cpu_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "nope.txt" in result.stderr.strip().splitlines()[-1]


def test_supervised_csv_with_hard_negatives_trains(tmp_path):
    """sup SimCSE through the real loop: CSV sent0,sent1,hard_neg → K = 3 views, hard negatives in the loss."""
    from distilface_jax.training import trainer
    from distilface_jax.training.metrics import read_metrics
    from distilface_jax.training.tiny_data import write_tiny_corpus

    sentences = write_tiny_corpus(str(tmp_path / "corpus.txt"), num_sentences=200)
    rows = ["sent0,sent1,hard_neg"] + [f'"{a}","{a.lower()}","{b}"' for a, b in zip(sentences, sentences[1:])]
    (tmp_path / "nli.csv").write_text("\n".join(rows) + "\n")
    config = load_config(ROOT / "configs" / "tiny.py")
    config.data.format, config.data.train_file = "sup", str(tmp_path / "nli.csv")
    config.max_steps, config.log_every, config.eval_every, config.eval.final_test = 4, 1, 0, False
    config.loss.hard_negative_weight = 1.0
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
    records = [r for r in read_metrics(str(tmp_path / "run")) if "loss" in r]
    assert len(records) == 4 and all("hard_negative_cosine" in r for r in records)


def test_conftest_forces_eight_devices_and_keeps_other_xla_flags():
    """A caller's XLA_FLAGS (even with its own device count) cannot leave the suite on fewer devices."""
    env = dict(cpu_env(), XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_dump_hlo_as_text")
    code = (
        "import os, sys; sys.path.insert(0, 'tests'); import conftest, jax; "
        "print(jax.device_count(), os.environ['XLA_FLAGS'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    count, flags = result.stdout.split(maxsplit=1)
    assert count == "8" and "--xla_dump_hlo_as_text" in flags and "device_count=2" not in flags


def test_train_hands_the_loop_the_recipe_its_config_asks_for(tmp_path, monkeypatch):
    """`python -m distilface_jax.train` chooses the recipe from the config (a `distill` block with a
    teacher: distillation; else SimCSE) and hands it to the loop, which imports no recipe itself."""
    from distilface_jax import train
    from distilface_jax.distill.run import DistillRecipe
    from distilface_jax.training import trainer
    from distilface_jax.training.simcse import SimCSE

    handed = []

    def loop(config, workdir, recipe=None):
        handed.append(recipe)
        return trainer.Outcome(final_step=0)

    monkeypatch.setattr(trainer, "train_and_evaluate", loop)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"a cat sat on mat {i}\n" for i in range(80)))  # >= one global batch
    for name in ("distill_minilm_l3", "tiny"):
        train.FLAGS.unparse_flags()
        train.FLAGS(["train", f"--config={ROOT / 'configs' / name}.py", f"--workdir={tmp_path / 'run'}"])
        train.FLAGS.config.data.train_file, train.FLAGS.config.eval.sts_dir = str(corpus), "builtin:tiny"
        assert train.main(["train"]) == 0
    train.FLAGS.unparse_flags()
    assert [type(recipe) for recipe in handed] == [DistillRecipe, SimCSE]
