"""Corpora as mixtures (training/mixture.py): a comma list, a glob or a .mixture.json as
`config.data.train_file`. Expected sentence lists and counts are worked out by hand in each
test (never the code run twice); sampled lines are checked against numpy's generator called
as the docstring says, and against what a sample must be (a subset, in file order)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distilface_jax.cli import checks
from distilface_jax.cli.policy import UsageError
from distilface_jax.training import data, mixture, resume

from helpers import ROOT, cpu_env, load_config


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def _spec(path: Path, document) -> str:
    return _write(path, document if isinstance(document, str) else json.dumps(document))


def _sentences(train_file: str) -> list[str]:
    return mixture.read(mixture.parse(train_file))[0]


def _numbered(prefix: str, count: int) -> str:
    return "".join(f"{prefix} {i}\n" for i in range(count))


# ----------------------------------------------------------------------------- the rules, by hand


def test_hand_built_mixture_strips_skips_blanks_deduplicates_and_weights(tmp_path):
    # a: "x1", "x2" (stripped), a blank line, "x3", "x1" again (a duplicate inside a source), CRLF ends.
    _write(tmp_path / "a.txt", "x1\r\n  x2  \r\n\r\n\tx3\r\nx1\r\n")
    _write(tmp_path / "b.txt", "x2\ny1\n\n y2\n")  # "x2" was in a: dropped
    spec = _spec(tmp_path / "m.mixture.json", {"sources": [{"path": "a.txt", "weight": 2}, {"path": "b.txt"}]})
    sentences, skipped, record = mixture.read(mixture.parse(spec))
    # a after dedup: x1 x2 x3, weight 2 = two full copies; b after dedup: y1 y2, weight 1.
    assert sentences == ["x1", "x2", "x3", "x1", "x2", "x3", "y1", "y2"]
    assert skipped == 2
    rows = [{k: row[k] for k in ("lines_read", "after_cap", "after_dedup", "contributed")} for row in record["sources"]]
    assert rows == [
        {"lines_read": 4, "after_cap": 4, "after_dedup": 3, "contributed": 6},
        {"lines_read": 3, "after_cap": 3, "after_dedup": 2, "contributed": 2},
    ]
    assert [row["path"] for row in record["sources"]] == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert record["sentences"] == 8
    # The comma form: weight 1 each, same dedup.
    assert _sentences(f"{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}") == ["x1", "x2", "x3", "y1", "y2"]
    # Order matters: b first keeps its x2, and a loses it.
    assert _sentences(f"{tmp_path / 'b.txt'},{tmp_path / 'a.txt'}") == ["x2", "y1", "y2", "x1", "x3"]


def test_train_data_holds_the_mixture_in_its_order(tmp_path, tokenizer):
    _write(tmp_path / "a.txt", "the man\nthe dog\n")
    _write(tmp_path / "b.txt", "the dog\na cat\n")
    loaded = data.load_unsupervised(
        f"{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}", tokenizer, global_batch_size=1, max_seq_length=8
    )
    expected = tokenizer(["the man", "the dog", "a cat"], padding="max_length", max_length=8)["input_ids"]
    assert loaded.arrays["input_ids"][:, 0].tolist() == expected
    assert loaded.mixture_record["sentences"] == 3


def test_cap_keeps_a_seeded_sample_in_file_order(tmp_path):
    _write(tmp_path / "big.txt", _numbered("line", 10))
    _write(tmp_path / "other.txt", _numbered("other", 3))
    spec = _spec(
        tmp_path / "m.mixture.json",
        {"seed": 7, "sources": [{"path": "other.txt"}, {"path": "big.txt", "cap": 4}]},
    )
    sentences = _sentences(spec)
    assert sentences[:3] == ["other 0", "other 1", "other 2"]
    capped = sentences[3:]
    assert len(capped) == 4
    positions = [int(line.split()[1]) for line in capped]
    assert positions == sorted(positions) and len(set(positions)) == 4  # a sample, in file order
    # The documented draw: default_rng([seed, source index, 0]).choice(n, cap, replace=False), sorted.
    reference = sorted(np.random.default_rng([7, 1, 0]).choice(10, size=4, replace=False).tolist())
    assert positions == reference
    # A cap above the line count keeps every line.
    big = _spec(tmp_path / "n.mixture.json", {"sources": [{"path": "big.txt", "cap": 50}]})
    assert _sentences(big) == [f"line {i}" for i in range(10)]


def test_weights_below_and_above_one_give_round_w_times_n_lines(tmp_path):
    _write(tmp_path / "five.txt", _numbered("five", 5))
    _write(tmp_path / "ten.txt", _numbered("ten", 10))
    cases = {  # weight on five.txt: lines it contributes, round(w * 5) worked out by hand (half up)
        0.5: 3,  # 2.5 -> 3: a sample of 3
        0.2: 1,
        1.0: 5,
        2.5: 13,  # 12.5 -> 13: two full copies and a sample of 3
        3.0: 15,
    }
    for weight, expected in cases.items():
        spec = _spec(tmp_path / f"w{weight}.mixture.json", {"sources": [{"path": "five.txt", "weight": weight}]})
        sentences = _sentences(spec)
        assert len(sentences) == expected, weight
        whole = int(weight)
        assert sentences[: whole * 5] == [f"five {i}" for i in range(5)] * whole
        rest = [int(line.split()[1]) for line in sentences[whole * 5 :]]
        assert rest == sorted(set(rest)), weight  # the fractional part: a sample without repeats, in file order
    # With a cap and a weight: cap first (10 -> 4), then the weight on what is left: round(1.5 * 4) = 6.
    spec = _spec(tmp_path / "cw.mixture.json", {"sources": [{"path": "ten.txt", "cap": 4, "weight": 1.5}]})
    sentences = _sentences(spec)
    assert len(sentences) == 6 and sentences[4:] == [s for s in sentences[:4] if s in sentences[4:]]


def test_same_spec_same_list_and_another_seed_another_sample(tmp_path):
    _write(tmp_path / "many.txt", _numbered("s", 100))
    first = _spec(tmp_path / "a.mixture.json", {"seed": 0, "sources": [{"path": "many.txt", "cap": 10, "weight": 0.5}]})
    again = _spec(tmp_path / "b.mixture.json", {"seed": 0, "sources": [{"path": "many.txt", "cap": 10, "weight": 0.5}]})
    other = _spec(tmp_path / "c.mixture.json", {"seed": 1, "sources": [{"path": "many.txt", "cap": 10, "weight": 0.5}]})
    assert _sentences(first) == _sentences(again)
    assert len(_sentences(first)) == 5 and _sentences(first) != _sentences(other)


def test_globs_sorted_and_paths_relative_to_the_mixture_file(tmp_path, monkeypatch):
    _write(tmp_path / "data" / "part-b.txt", "b one\n")
    _write(tmp_path / "data" / "part-a.txt", "a one\na two\n")
    _write(tmp_path / "data" / "extra" / "wiki.txt", "w one\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths are the mixture file's folder's, not the working folder's
    spec = _spec(
        tmp_path / "specs" / "m.mixture.json",
        {"sources": [{"path": "../data/part-*.txt", "weight": 2}, {"path": str(tmp_path / "data/extra/wiki.txt")}]},
    )
    parsed = mixture.parse(spec)
    assert [s.path for s in parsed.sources] == [
        str(tmp_path / "data" / "part-a.txt"),
        str(tmp_path / "data" / "part-b.txt"),
        str(tmp_path / "data" / "extra" / "wiki.txt"),
    ]
    assert [s.weight for s in parsed.sources] == [2.0, 2.0, 1.0]
    assert _sentences(spec) == ["a one", "a two", "a one", "a two", "b one", "b one", "w one"]
    # A glob on the command line: relative to the working folder, matches sorted, weight 1.
    monkeypatch.chdir(tmp_path)
    assert _sentences("data/part-*.txt,data/*/*.txt") == ["a one", "a two", "b one", "w one"]


# ----------------------------------------------------------------------------- fingerprints


def _old_cache_name(cache_dir, path, tokenizer, length, fmt) -> str:
    """data.cache_path as it was before mixtures (commit 4b3fe23): the key of every existing cache."""
    st = os.stat(path)
    key = json.dumps(
        {
            "version": 1,
            "source": {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
            "format": fmt,
            "tokenizer": data._tokenizer_fingerprint(tokenizer),
            "max_seq_length": length,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return os.path.join(cache_dir, f"{os.path.basename(path)}.{fmt}.L{length}.{digest}.npz")


def test_a_single_file_keeps_its_cache_and_teacher_keys(tmp_path, tokenizer):
    from distilface_jax.distill import run

    path = _write(tmp_path / "wiki.txt", "one\ntwo\n")
    source = data.resolve_source(path)
    assert not isinstance(source, mixture.Mixture)
    expected = _old_cache_name(str(tmp_path / "cache"), path, tokenizer, 16, "unsup")
    assert data.cache_path(str(tmp_path / "cache"), source, tokenizer, 16, "unsup") == expected
    loaded = data.load_unsupervised(
        path, tokenizer, global_batch_size=1, max_seq_length=16, cache_dir=str(tmp_path / "cache")
    )
    assert loaded.cache_file == expected and loaded.mixture_record is None and os.path.isfile(expected)
    # The teacher cache's key: (source.name, source.fingerprint(), ...), as before.
    corpus_source, sentences = run._read_corpus(path)
    st = os.stat(path)
    assert (corpus_source.name, corpus_source.fingerprint()) == (
        path,
        {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
    )
    assert sentences == ["one", "two"]


def test_the_fingerprint_changes_with_a_weight_a_cap_the_seed_or_a_file(tmp_path, tokenizer):
    from distilface_jax.distill import run

    _write(tmp_path / "a.txt", "one\ntwo\n")
    _write(tmp_path / "b.txt", "three\n")
    spec_file = tmp_path / "m.mixture.json"

    def fingerprint(document):
        _spec(spec_file, document)
        return mixture.parse(str(spec_file)).fingerprint()

    base = {"seed": 0, "sources": [{"path": "a.txt"}, {"path": "b.txt"}]}
    first = fingerprint(base)
    assert [s["weight"] for s in first["sources"]] == [1.0, 1.0]
    assert fingerprint({"seed": 0, "sources": [{"path": "a.txt", "weight": 2}, {"path": "b.txt"}]}) != first
    assert fingerprint({"seed": 0, "sources": [{"path": "a.txt", "cap": 1}, {"path": "b.txt"}]}) != first
    assert fingerprint({"seed": 1, "sources": [{"path": "a.txt"}, {"path": "b.txt"}]}) != first
    assert fingerprint(base) == first
    cache_before = data.cache_path(str(tmp_path), mixture.parse(str(spec_file)), tokenizer, 16, "unsup")
    teacher_before = run._read_corpus(str(spec_file))[0].fingerprint()
    _write(tmp_path / "b.txt", "three\nfour\n")  # a source changed on disk
    assert fingerprint(base) != first
    assert data.cache_path(str(tmp_path), mixture.parse(str(spec_file)), tokenizer, 16, "unsup") != cache_before
    assert run._read_corpus(str(spec_file))[0].fingerprint() != teacher_before


# ----------------------------------------------------------------------------- errors before anything is written


def _error_cases(d: Path) -> dict:
    """name: (train_file, extra config, what the one line must name). `d` holds the fixture files."""
    _write(d / "a.txt", "one\ntwo\n")
    _write(d / "sub.txt", "two\n")  # every line already in a.txt
    _write(d / "blank.txt", " \n\n")
    (d / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))

    def spec(name, document):
        return _spec(d / f"{name}.mixture.json", document)

    return {
        "missing file in a list": (f"{d}/a.txt,{d}/nope.txt", {}, "item 2: " + f"{d}/nope.txt: no such file"),
        "glob matching nothing": (f"{d}/a.txt,{d}/none-*.txt", {}, "none-*.txt matches no file"),
        "missing mixture file": (f"{d}/absent.mixture.json", {}, "absent.mixture.json: no such mixture file"),
        "missing source": (
            spec("missing", {"sources": [{"path": "gone.txt"}]}),
            {},
            "sources[0]: gone.txt: no such file",
        ),
        "glob in a mixture": (
            spec("glob", {"sources": [{"path": "x/*.txt"}]}),
            {},
            "sources[0]: x/*.txt matches no file",
        ),
        "weight zero": (
            spec("w0", {"sources": [{"path": "a.txt", "weight": 0}]}),
            {},
            "sources[0].weight: must be a number > 0, got 0",
        ),
        "weight negative": (
            spec("wn", {"sources": [{"path": "a.txt"}, {"path": "sub.txt", "weight": -1.5}]}),
            {},
            "sources[1].weight: must be a number > 0, got -1.5",
        ),
        "weight not a number": (
            spec("ws", {"sources": [{"path": "a.txt", "weight": "2"}]}),
            {},
            'sources[0].weight: must be a number > 0, got "2"',
        ),
        "cap zero": (
            spec("c0", {"sources": [{"path": "a.txt", "cap": 0}]}),
            {},
            "sources[0].cap: must be an integer >= 1",
        ),
        "empty source": (
            spec("blank", {"sources": [{"path": "a.txt"}, {"path": "blank.txt"}]}),
            {},
            "sources[1]: " + f"{d}/blank.txt: no training sentences",
        ),
        "nothing left after dedup": (
            spec("dup", {"sources": [{"path": "a.txt"}, {"path": "sub.txt"}]}),
            {},
            "sources[1]: sub.txt: nothing left after deduplication",
        ),
        "weight keeps nothing": (
            spec("tiny", {"sources": [{"path": "a.txt", "weight": 0.1}]}),
            {},
            "sources[0]: a.txt: weight 0.1 keeps none of its 2 lines",
        ),
        "unknown key": (
            spec("key", {"seed": 0, "sources": [{"path": "a.txt", "weigth": 2}]}),
            {},
            "sources[0].weigth: unknown key",
        ),
        "unknown top key": (spec("top", {"sed": 0, "sources": [{"path": "a.txt"}]}), {}, "sed: unknown key"),
        "malformed JSON": (
            spec("json", '{"sources": [\n  {"path": "a.txt",}\n]}'),
            {},
            "line 2 column 20: not valid JSON",
        ),
        "not UTF-8": (f"{d}/a.txt,{d}/latin1.txt", {}, "item 2: " + f"{d}/latin1.txt: line 2: not UTF-8"),
        "fewer than a batch": (f"{d}/a.txt", {"batch_size": 8}, "a.txt: 2 sentences"),
        "supervised": (f"{d}/a.txt,{d}/sub.txt", {"data.format": "sup"}, "--config.data.format=sup: a mixture"),
        "mixture with the token store": (
            spec("ok", {"sources": [{"path": "a.txt"}]}),
            {"data.token_store": True},
            "--config.data.token_store=True does not read mixtures",
        ),
    }


def test_every_bad_spec_is_one_line_before_anything_is_written(tmp_path):
    config = load_config(ROOT / "configs" / "tiny.py")
    config.eval_every, config.eval.final_test = 0, False
    for name, (train_file, extra, message) in _error_cases(tmp_path / "in").items():
        case = config.copy_and_resolve_references()
        case.data.train_file = train_file
        for key, value in extra.items():
            *parents, leaf = key.split(".")
            setattr(case[parents[0]] if parents else case, leaf, value)
        workdir = tmp_path / "runs" / name.replace(" ", "_")
        with pytest.raises(UsageError) as error:
            checks.check_before_training(case, str(workdir))
        text = str(error.value)
        assert "\n" not in text and message in text, (name, text)
        if name not in ("supervised", "mixture with the token store"):
            assert text.startswith(f"--config.data.train_file={train_file}: "), (name, text)
        assert not workdir.exists(), name


def test_the_train_command_refuses_a_bad_mixture_in_one_line(tmp_path):
    spec = _spec(tmp_path / "m.mixture.json", {"sources": [{"path": "a.txt", "weight": 0}]})
    _write(tmp_path / "a.txt", "one\n")
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "distilface_jax.train",
            "--config=configs/tiny.py",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.train_file={spec}",
        ],
        cwd=ROOT,
        env=dict(cpu_env(), PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2, process.stderr
    assert (
        process.stderr.strip()
        == f"error: --config.data.train_file={spec}: sources[0].weight: must be a number > 0, got 0"
    )
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- a run on a mixture, and its resume


def _snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_a_run_on_a_mixture_records_it_and_refuses_to_resume_on_a_changed_one(tmp_path):
    from distilface_jax.training import trainer

    _write(tmp_path / "data" / "a.txt", _numbered("alpha", 6))
    _write(tmp_path / "data" / "b.txt", "alpha 0\nalpha 1\n" + _numbered("beta", 6))
    spec = _spec(
        tmp_path / "data" / "m.mixture.json", {"sources": [{"path": "a.txt"}, {"path": "b.txt", "weight": 0.5}]}
    )
    config = load_config(ROOT / "configs" / "tiny.py")  # the builtin tiny model
    config.data.train_file = spec
    config.batch_size, config.max_steps, config.log_every, config.checkpoint_every = 8, 2, 1, 2
    config.eval_every, config.eval.final_test = 0, False
    workdir = tmp_path / "run"
    checks.check_before_training(config, str(workdir))
    assert trainer.train_and_evaluate(config, str(workdir)).final_step == 2
    record = json.loads((workdir / "mixture.json").read_text())
    # a: 6 lines, all kept; b: 8 read, its 2 alpha lines are a's, 6 left, weight 0.5 -> 3.
    assert [
        (r["path"], r["lines_read"], r["after_cap"], r["after_dedup"], r["contributed"], r["weight"], r["cap"])
        for r in record["sources"]
    ] == [
        (str(tmp_path / "data" / "a.txt"), 6, 6, 6, 6, 1.0, None),
        (str(tmp_path / "data" / "b.txt"), 8, 8, 6, 3, 0.5, None),
    ]
    assert record["sentences"] == 9 and record["spec"] == spec

    # The same mixture resumes; a changed weight (same train_file, same length) is refused, nothing written.
    resume.check_mixture(str(workdir), record, "run")
    before = _snapshot(workdir)
    _spec(tmp_path / "data" / "m.mixture.json", {"sources": [{"path": "a.txt"}, {"path": "b.txt", "weight": 1}]})
    with pytest.raises(resume.ConfigMismatchError) as error:
        trainer.train_and_evaluate(config, str(workdir))
    assert "\n" not in str(error.value)
    assert f"the training data changed: source {tmp_path / 'data' / 'b.txt'}: weight 0.5 → 1.0" in str(error.value)
    assert _snapshot(workdir) == before
    # A source changed on disk is refused too.
    _spec(tmp_path / "data" / "m.mixture.json", {"sources": [{"path": "a.txt"}, {"path": "b.txt", "weight": 0.5}]})
    _write(tmp_path / "data" / "b.txt", "alpha 0\nalpha 1\n" + _numbered("beta", 7))
    _, _, changed = mixture.read(mixture.parse(spec))
    with pytest.raises(resume.ConfigMismatchError, match="b.txt: changed on disk"):
        resume.check_mixture(str(workdir), changed, "run")


def test_a_list_resumed_without_its_mixture_record_is_refused(tmp_path):
    # A workdir of earlier code that read a list through the token store has no mixture.json:
    # reading the list as a mixture now would train on other rows (dedup), so it is refused.
    _write(tmp_path / "a.txt", "one\n")
    _, _, record = mixture.read(mixture.parse(str(tmp_path / "a*.txt")))
    (tmp_path / "old_run").mkdir()
    with pytest.raises(resume.ConfigMismatchError, match="resume with --config.data.token_store=True"):
        resume.check_mixture(str(tmp_path / "old_run"), record, "old run")
    resume.check_mixture(str(tmp_path / "old_run"), None, "old run")  # a single file: nothing to compare
    # A mixture run resumed with the token store (the list concatenated, no dedup) is refused too.
    (tmp_path / "old_run" / "mixture.json").write_text(json.dumps(record))
    with pytest.raises(resume.ConfigMismatchError, match="trained on a mixture .* reads none"):
        resume.check_mixture(str(tmp_path / "old_run"), None, "mixture run")
    resume.check_mixture(str(tmp_path / "old_run"), record, "mixture run")


def test_distillation_on_a_mixture_keys_its_teacher_cache_by_the_mixture(tmp_path, monkeypatch):
    from distilface_jax import recipes
    from distilface_jax.config.base import BUILTIN_TINY, base_config, distill_block
    from distilface_jax.distill import teacher as teacher_lib
    from distilface_jax.training import trainer

    from helpers import save_tiny_hf_model

    embedded = []
    original = teacher_lib.embed_corpus
    monkeypatch.setattr(
        teacher_lib, "embed_corpus", lambda t, s, batch_size=128: embedded.append(list(s)) or original(t, s, batch_size)
    )
    _write(tmp_path / "data" / "a.txt", _numbered("the cat", 10))
    _write(tmp_path / "data" / "b.txt", "the cat 0\n" + _numbered("a dog", 10))
    spec_file = tmp_path / "data" / "m.mixture.json"
    _spec(spec_file, {"sources": [{"path": "a.txt"}, {"path": "b.txt", "weight": 0.6}]})
    config = base_config()
    config.distill = distill_block()
    config.distill.teacher = str(save_tiny_hf_model(tmp_path / "teacher", "bert", seed=1))
    config.distill.teacher_pooler, config.distill.teacher_normalize, config.distill.student_layers = "avg", True, (1,)
    config.model.name_or_path, config.model.pooler = "", "avg"
    config.data.train_file, config.data.cache_dir = str(spec_file), str(tmp_path / "cache")
    config.data.max_seq_length, config.eval.sts_dir, config.eval.final_test = 16, BUILTIN_TINY, False
    config.batch_size, config.max_steps, config.eval_every, config.checkpoint_every = 8, 1, 0, 1
    trainer.train_and_evaluate(config, str(tmp_path / "run"), recipes.for_config(config))
    # a: 10 lines; b: "the cat 0" is a's, 10 left, weight 0.6 -> 6 sampled lines: 16 sentences embedded once.
    assert len(embedded) == 1 and len(embedded[0]) == 16 and embedded[0][:10] == [f"the cat {i}" for i in range(10)]
    assert all(line.startswith("a dog ") for line in embedded[0][10:])
    cached = [p.name for p in (tmp_path / "cache").glob("teacher.*.npy")]
    assert len(cached) == 1 and cached[0].startswith("teacher.m.mixture.json."), cached
    # (Another weight gives another key: test_the_fingerprint_changes_with_a_weight_a_cap_the_seed_or_a_file.)
