"""Distillation as a recipe of the shared trainer, on tiny models: the first step's loss and
gradient equal PyTorch's (the config's temperature, contrastive weight and teacher pooling
reach the step; the teacher cache follows the corpus), bit-identical resume after an
interruption, the teacher's corpus embeddings computed once (not per epoch, not per run), the
export loaded by sentence-transformers equal to `encode --workdir` (with the width map kept or
dropped), and one clear error for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from distilface_jax import encode, export, recipes
from distilface_jax.config.base import BUILTIN_TINY, base_config, distill_block
from distilface_jax.distill import run as distill_run, teacher as teacher_lib
from distilface_jax.distill.student import StudentError
from distilface_jax.interop.hf import ModelLoadError
from distilface_jax.trained_model import load_run_model
from distilface_jax.training import trainer
from distilface_jax.training.metrics import read_metrics

from helpers import SENTENCES, WORDS, make_tokenizer, save_tiny_hf_model

CORPUS_LINES = 48  # batch 16: 3 steps per epoch, so 8 steps run through 3 epochs


def write_corpus(path: Path, lines: int = CORPUS_LINES, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(lines)) + "\n")
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_model(tmp_path_factory.mktemp("distill_teacher"), "bert", seed=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def distill_config(teacher_dir, corpus, cache_dir, **overrides):
    config = base_config()
    config.distill = distill_block()
    config.distill.teacher = str(teacher_dir)
    config.distill.teacher_pooler = "avg"  # A plain HF folder: its pipeline is given in the config.
    config.distill.teacher_normalize = True
    config.distill.student_layers = (1,)
    config.model.name_or_path = ""
    config.model.pooler = "avg"
    config.data.train_file = str(corpus)
    config.data.cache_dir = str(cache_dir) if cache_dir else ""
    config.data.max_seq_length = 16
    config.eval.sts_dir = BUILTIN_TINY
    config.eval.batch_size = 32
    config.eval.final_test = False
    config.batch_size = 16
    config.learning_rate = 1e-3
    config.max_steps = 8
    config.log_every = 1
    config.eval_every = 8  # One evaluation (at the end): the best checkpoint the export reads.
    config.checkpoint_every = 4
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def train(config, workdir):
    """The loop with the recipe the config asks for, as `python -m distilface_jax.train` runs it."""
    return trainer.train_and_evaluate(config, str(workdir), recipes.for_config(config))


@pytest.fixture
def count_teacher_runs(monkeypatch):
    calls = []
    original = teacher_lib.embed_corpus

    def counting(teacher, sentences, batch_size=128):
        calls.append(len(sentences))
        return original(teacher, sentences, batch_size)

    monkeypatch.setattr(teacher_lib, "embed_corpus", counting)
    return calls


def losses_by_step(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(str(workdir)) if "loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(teacher_dir, corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill_run")
    workdir = folder / "run"
    outcome = train(distill_config(teacher_dir, corpus, folder / "cache"), workdir)
    assert outcome.final_step == 8 and outcome.best_step is not None
    return workdir


def test_interrupted_run_resumes_bit_identical_and_the_teacher_runs_once(
    uninterrupted, teacher_dir, corpus, tmp_path, monkeypatch, count_teacher_runs
):
    config = distill_config(teacher_dir, corpus, tmp_path / "cache")
    workdir = tmp_path / "run"
    real_preempted = trainer._preempted
    monkeypatch.setattr(trainer, "_preempted", lambda flag, runs, step: step == 4 or real_preempted(flag, runs, step))
    first = train(config, workdir)
    assert first.preempted and first.final_step == 4
    # Written before distill.keep_projection and the queue/relational/hidden/attention keys
    # existed: such a workdir resumes (read as False, and every new term off, as it ran).
    for path in workdir.glob("checkpoints/*/meta/metadata"):  # The run config each checkpoint saved.
        meta = json.loads(path.read_text())
        for key in ("keep_projection", *LATER_KEYS):
            del meta["config"]["distill"][key]
        path.write_text(json.dumps(meta))
    monkeypatch.setattr(trainer, "_preempted", real_preempted)
    second = train(config, workdir)
    assert second.final_step == 8 and not second.preempted
    assert count_teacher_runs == [CORPUS_LINES]  # Once for 3 epochs and two processes' worth of runs.
    assert losses_by_step(workdir) == losses_by_step(uninterrupted)  # Every step, bit for bit.
    jax.tree_util.tree_map(
        np.testing.assert_array_equal,
        jax.device_get(load_run_model(str(workdir)).params),
        jax.device_get(load_run_model(str(uninterrupted)).params),
    )

    # The cache key follows the teacher's pipeline: another normalisation or length is another entry.
    def key(**settings):
        teacher = teacher_lib.load_teacher(str(teacher_dir), pooler="avg", **settings)
        return teacher_lib.cache_path("cache", "corpus.txt", {"path": "corpus.txt"}, teacher, CORPUS_LINES)

    assert len({key(normalize=True), key(normalize=False), key(normalize=True, max_length=8)}) == 3
    assert key(normalize=True) == key(normalize=True)


LATER_KEYS = (
    "queue_steps",
    "relational_weight",
    "relational_temperature",
    "hidden_weight",
    "hidden_loss",
    "attention_weight",
)
EVERY_TERM = dict(
    distill__contrastive_weight=0.1,
    distill__queue_steps=2,
    distill__relational_weight=0.5,
    distill__hidden_weight=0.5,
    distill__attention_weight=0.5,
)


def test_every_term_and_the_queue_resume_bit_identical(uninterrupted, teacher_dir, corpus, tmp_path, monkeypatch):
    """The queue is rebuilt from the data order on resume: a run interrupted at step 4 ends
    with the uninterrupted run's losses at every step and its parameters, bit for bit."""
    config = distill_config(teacher_dir, corpus, tmp_path / "cache", **EVERY_TERM)
    straight = train(config, tmp_path / "straight")
    assert straight.final_step == 8
    rows = [r for r in read_metrics(str(tmp_path / "straight")) if "loss" in r]
    assert all(r["relational_kl"] > 0 and r["hidden_loss"] > 0 and r["attention_kl"] > 0 for r in rows)
    assert losses_by_step(tmp_path / "straight") != losses_by_step(uninterrupted)  # the terms are on

    workdir = tmp_path / "run"
    real_preempted = trainer._preempted
    monkeypatch.setattr(trainer, "_preempted", lambda flag, runs, step: step == 4 or real_preempted(flag, runs, step))
    assert train(config, workdir).final_step == 4
    monkeypatch.setattr(trainer, "_preempted", real_preempted)
    assert train(config, workdir).final_step == 8
    assert losses_by_step(workdir) == losses_by_step(tmp_path / "straight")
    jax.tree_util.tree_map(
        np.testing.assert_array_equal,
        jax.device_get(load_run_model(str(workdir)).params),
        jax.device_get(load_run_model(str(tmp_path / "straight")).params),
    )


def test_teacher_cache_is_shared_by_new_workdirs_and_old_workdirs_read_theirs(
    teacher_dir, corpus, tmp_path, monkeypatch, count_teacher_runs
):
    """Without data.cache_dir, the teacher's embeddings go to the user's cache folder: a second
    workdir with the same teacher and corpus runs no teacher pass. A workdir of earlier code,
    whose embeddings are in WORKDIR/cache, still reads them there."""
    monkeypatch.setenv(teacher_lib.CACHE_ENVIRONMENT, str(tmp_path / "user_cache"))
    config = distill_config(teacher_dir, corpus, "", max_steps=2, eval_every=0)
    first, second = tmp_path / "first", tmp_path / "second"
    trainer.train_and_evaluate(config, str(first), recipes.for_config(config))
    assert count_teacher_runs == [CORPUS_LINES]
    cached = list((tmp_path / "user_cache").glob("teacher.*.npy"))
    assert len(cached) == 1 and not list(first.rglob("teacher.*.npy"))
    trainer.train_and_evaluate(config, str(second), recipes.for_config(config))
    assert count_teacher_runs == [CORPUS_LINES]  # no teacher pass for the second workdir
    cached[0].rename(first / "cache" / cached[0].name)  # where earlier code kept it
    monkeypatch.setenv(teacher_lib.CACHE_ENVIRONMENT, str(tmp_path / "empty_user_cache"))
    config.max_steps = 4
    config.extend = True
    trainer.train_and_evaluate(config, str(first), recipes.for_config(config))  # resumes, extended by two steps
    assert count_teacher_runs == [CORPUS_LINES]
    assert teacher_lib.cache_folder("") == str(tmp_path / "empty_user_cache")
    monkeypatch.delenv(teacher_lib.CACHE_ENVIRONMENT)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert teacher_lib.cache_folder("") == str(tmp_path / "xdg" / "distilface_jax")
    assert teacher_lib.cache_folder("/elsewhere") == "/elsewhere"


def test_export_loads_in_sentence_transformers_with_the_embeddings_of_encode(uninterrupted, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "student"
    assert export.main(["--workdir", str(uninterrupted), "--step", "best", "--out", str(out)]) == 0
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]  # The teacher's pipeline.
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n")
    assert (
        encode.main(
            [
                "--workdir",
                str(uninterrupted),
                "--step",
                "best",
                "--input",
                str(sentences),
                "--output",
                str(tmp_path / "ours.npy"),
            ]
        )
        == 0
    )
    ours = np.load(tmp_path / "ours.npy")
    theirs = SentenceTransformer(str(out), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- the recipe's first step
# The teacher is `scaled_bert_dir` (weights N(0, 0.3²)): its sentences are far apart (cosines down
# to 0.4, where the 0.02-weight teacher's are all above 0.9999), so the temperature, the pooling
# and the corpus each move the loss by 7-80 %, not by 1e-4.

FIRST_STEP_LINES = 16  # = the global batch: the step's loss is that of the whole corpus, in any order
# Each away from its default, so a recipe that hard-coded or dropped one would not match PyTorch.
FIRST_STEP = dict(
    distill__temperature=0.1,
    distill__contrastive_weight=0.7,
    distill__teacher_pooler="cls_before_pooler",  # not the student's own pooler (avg)
    model__dropout=0.0,  # deterministic, so PyTorch can reproduce the step
    model__attention_dropout=0.0,
    max_steps=1,
    eval_every=0,
    checkpoint_every=1,
)


def pytorch_first_step(teacher_dir: Path, corpus: Path) -> tuple[float, float]:
    """(loss, gradient norm) of FIRST_STEP's first step, in PyTorch with no project code: the
    teacher is HF's BertModel, its [CLS] hidden state at unit length; the student the same model
    with layer 1 alone (distill.student_layers), mean pooled at unit length;
    L = MSE(s, t) + 0.7 · cross-entropy(cos(s_i, t_j) / 0.1, i)."""
    import torch
    import torch.nn.functional as F
    import transformers

    sentences = corpus.read_text().splitlines()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(teacher_dir))
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    teacher = transformers.BertModel.from_pretrained(str(teacher_dir)).eval()
    student = transformers.BertModel.from_pretrained(str(teacher_dir)).eval()
    student.encoder.layer = torch.nn.ModuleList([student.encoder.layer[1]])
    with torch.no_grad():
        t = F.normalize(teacher(**batch).last_hidden_state[:, 0], dim=-1)
    mask = batch["attention_mask"][..., None].float()
    s = F.normalize((student(**batch).last_hidden_state * mask).sum(1) / mask.sum(1), dim=-1)
    weight, temperature = FIRST_STEP["distill__contrastive_weight"], FIRST_STEP["distill__temperature"]
    loss = F.mse_loss(s, t) + weight * F.cross_entropy(s @ t.T / temperature, torch.arange(len(sentences)))
    loss.backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in student.parameters() if p.grad is not None))
    return loss.item(), norm.item()


def first_step_record(teacher_dir: Path, corpus: Path, cache_dir: Path, workdir: Path, **overrides) -> dict:
    config = distill_config(teacher_dir, corpus, cache_dir, **FIRST_STEP, **overrides)
    trainer.train_and_evaluate(config, str(workdir), recipes.for_config(config))
    (record,) = [r for r in read_metrics(str(workdir)) if "loss" in r]
    return record


def assert_equals_pytorch(record: dict, teacher_dir: Path, corpus: Path) -> None:
    loss, gradient_norm = pytorch_first_step(teacher_dir, corpus)
    # Measured gaps: 8e-8 (loss) and 3e-7 (gradient norm), relative.
    assert record["loss"] == pytest.approx(loss, rel=1e-5)
    assert record["gradient_norm"] == pytest.approx(gradient_norm, rel=1e-5)


def test_first_step_with_the_teacher_in_the_step_equals_pytorch(scaled_bert_dir, tmp_path):
    """distill.teacher_in_step: the frozen teacher runs inside the step with its own pooling."""
    corpus = write_corpus(tmp_path / "corpus.txt", FIRST_STEP_LINES, seed=1)
    record = first_step_record(
        scaled_bert_dir, corpus, tmp_path / "cache", tmp_path / "run", distill__teacher_in_step=True
    )
    assert_equals_pytorch(record, scaled_bert_dir, corpus)


def test_cached_teacher_first_step_equals_pytorch_for_each_corpus_of_the_same_name(
    scaled_bert_dir, tmp_path, count_teacher_runs
):
    """Two corpora named corpus.txt in other folders, one shared cache folder: a run on the
    second must not reuse the teacher embeddings cached for the first. (The first corpus is
    cached the way train_and_evaluate starts, without compiling a step of its own.)"""
    first, second = (
        write_corpus(tmp_path / f"corpora_{seed}" / "corpus.txt", FIRST_STEP_LINES, seed=seed) for seed in (0, 1)
    )
    config = distill_config(scaled_bert_dir, first, tmp_path / "shared_cache", **FIRST_STEP)
    distiller = distill_run.prepare(config, str(tmp_path / "first_run"))
    train_data = trainer.load_train_data(config, distiller.student_tokenizer, str(tmp_path / "first_run"))
    distiller.attach_teacher(train_data, config, str(tmp_path / "first_run"))
    record = first_step_record(scaled_bert_dir, second, tmp_path / "shared_cache", tmp_path / "run")
    assert_equals_pytorch(record, scaled_bert_dir, second)
    assert count_teacher_runs == [FIRST_STEP_LINES, FIRST_STEP_LINES]


# ----------------------------------------------------------------------------- bad input


def _roberta_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta", "hidden_size": 32}))
    return folder


def _small_vocabulary_bert(folder: Path) -> Path:
    import transformers

    tokenizer = make_tokenizer(folder)
    config = transformers.BertConfig(
        vocab_size=20,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize(
    "case", ["teacher_family", "student_family", "layer_range", "student_vocabulary", "empty_corpus"]
)
def test_bad_input_is_one_clear_error(case, teacher_dir, corpus, tmp_path):
    overrides, error, message = {}, ValueError, None
    if case == "teacher_family":
        overrides, error, message = (
            {"distill__teacher": str(_roberta_folder(tmp_path / "roberta"))},
            ModelLoadError,
            r"teacher: .*model_type 'roberta' is not supported",
        )
    elif case == "student_family":
        overrides = {"distill__student_layers": None, "model__name_or_path": str(_roberta_folder(tmp_path / "roberta"))}
        error, message = ModelLoadError, r"student: .*model_type 'roberta' is not supported"
    elif case == "layer_range":
        overrides, error = {"distill__student_layers": (0, 2)}, StudentError
        message = r"student_layers: layer 2 is out of range for the 2-layer teacher"
    elif case == "student_vocabulary":
        overrides = {
            "distill__student_layers": None,
            "model__name_or_path": str(_small_vocabulary_bert(tmp_path / "small_vocab")),
        }
        error, message = StudentError, r"student .*tokenizer has \d+ tokens but the model's vocabulary has 20"
    elif case == "empty_corpus":
        empty = tmp_path / "empty.txt"
        empty.write_text("\n  \n")
        overrides, message = {"data__train_file": str(empty)}, r"empty.txt: the corpus is empty"
    config = distill_config(teacher_dir, corpus, tmp_path / "cache", **overrides)
    with pytest.raises(error, match=message) as raised:
        train(config, tmp_path / "run")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # Nothing half-started.


def test_the_loop_refuses_a_distillation_config_without_its_recipe(teacher_dir, corpus, tmp_path):
    """Handed no recipe, the loop trains SimCSE only: a distillation config is an error, not a SimCSE run."""
    with pytest.raises(ValueError, match="a distill config: pass its recipe"):
        trainer.train_and_evaluate(distill_config(teacher_dir, corpus, tmp_path / "cache"), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- width map kept


def _narrow_distilbert(folder: Path, width: int = 16) -> Path:
    """A student half as wide as the 32-wide teacher, with the same tokenizer."""
    import torch
    import transformers

    torch.manual_seed(3)
    tokenizer = make_tokenizer(folder)
    config = transformers.DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=width,
        n_layers=1,
        n_heads=2,
        hidden_dim=2 * width,
        max_position_embeddings=64,
    )
    transformers.DistilBertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_a_kept_width_map_is_evaluated_and_exported_as_a_dense_module(teacher_dir, corpus, tmp_path):
    """distill.keep_projection=True: the narrow student's D_s→D_t map is part of the model. The
    export (Transformer → Pooling → Dense → Normalize) loaded by sentence-transformers gives the
    teacher-wide embeddings of `encode --workdir`, which are the student's pooled output through
    the checkpoint's map, normalised (numpy)."""
    from sentence_transformers import SentenceTransformer

    student_dir = _narrow_distilbert(tmp_path / "narrow")
    config = distill_config(
        teacher_dir,
        corpus,
        tmp_path / "cache",
        distill__student_layers=None,
        distill__keep_projection=True,
        model__name_or_path=str(student_dir),
        max_steps=2,
        eval_every=2,
        checkpoint_every=2,
    )
    workdir = tmp_path / "run"
    train(config, workdir)
    out = tmp_path / "student"
    assert export.main(["--workdir", str(workdir), "--out", str(out)]) == 0
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 64  # the teacher's
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n")
    assert encode.main(["--workdir", str(workdir), "--input", str(sentences), "--output", str(tmp_path / "o.npy")]) == 0
    ours = np.load(tmp_path / "o.npy")
    assert ours.shape == (len(SENTENCES), 32)  # teacher-wide
    theirs = SentenceTransformer(str(out), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    # The exported folder read back by `encode --model` applies its Dense too.
    assert encode.main(["--model", str(out), "--input", str(sentences), "--output", str(tmp_path / "f.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), theirs, atol=2e-5)

    # Reference: HF's own DistilBERT on the exported weights, mean pooled, through the saved map.
    import torch
    import transformers

    run = load_run_model(str(workdir))
    kernel, bias = (np.asarray(run.params["projection"][k]) for k in ("kernel", "bias"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = transformers.AutoModel.from_pretrained(str(out))(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    reference = ((hidden * mask).sum(1) / mask.sum(1)) @ kernel + bias
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_a_dropped_width_map_leaves_the_students_own_embedding(teacher_dir, corpus, tmp_path):
    """distill.keep_projection=False (the default): the narrow student's D_s→D_t map was a
    training head only. `encode --workdir` gives the student's own D_s-wide embedding: HF's
    DistilBERT on the exported weights, mean pooled, unit length (the teacher's pipeline), and
    the export has no Dense module."""
    import torch
    import transformers

    student_dir = _narrow_distilbert(tmp_path / "narrow")
    config = distill_config(
        teacher_dir,
        corpus,
        tmp_path / "cache",
        distill__student_layers=None,
        model__name_or_path=str(student_dir),
        model__dropout=0.0,  # Dropout under vmap takes ~10 s to compile on 2 CPU cores; not needed here.
        model__attention_dropout=0.0,
        max_steps=1,
        eval_every=0,
        checkpoint_every=1,
    )
    workdir = tmp_path / "run"
    trainer.train_and_evaluate(config, str(workdir), recipes.for_config(config))
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n")
    assert encode.main(["--workdir", str(workdir), "--input", str(sentences), "--output", str(tmp_path / "o.npy")]) == 0
    out = tmp_path / "student"
    assert export.main(["--workdir", str(workdir), "--out", str(out)]) == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = transformers.AutoModel.from_pretrained(str(out))(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    reference = (hidden * mask).sum(1) / mask.sum(1)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    ours = np.load(tmp_path / "o.npy")
    assert ours.shape == (len(SENTENCES), 16)  # the student's width, not the teacher's 32
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
