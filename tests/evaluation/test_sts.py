"""SentEval STS loaders, protocol, CLI wiring and download script, on small hand-written fixtures.

Reference numbers come straight from scipy.stats on the hand-chosen predictions, never from
distilface_jax.sts itself. No model is loaded here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from distilface_jax import evaluate
from distilface_jax.evaluation import sts

from helpers import ROOT

SCRIPT = ROOT / "launch" / "download_senteval_sts.sh"
STSB_SPLITS = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
SICK_SPLITS = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}


# ----------------------------------------------------------------------------- fixtures
# Each pair is ("L<i>", "R <p>") with gold score g. `angle_embed` maps "L..." to [1, 0] and
# "R p" to [p, sqrt(1 - p^2)], so the model's cosine for that pair is exactly p: the test
# knows every prediction without running any model.


def angle_embed(sentences: list[str]) -> np.ndarray:
    rows = []
    for s in sentences:
        if s.startswith("L"):
            rows.append([1.0, 0.0])
        else:
            p = float(s.split()[1])
            rows.append([p, math.sqrt(1 - p * p)])
    # float64 so the cosines equal the chosen p to ~1e-16; x3: not unit norm, cosine must normalize.
    return np.asarray(rows, np.float64) * 3.0


def _pairs(rng: np.random.Generator, n: int, monotone: bool) -> list[tuple[str, str, float, float]]:
    """n pairs (s1, s2, gold, pred); `monotone`: pred is an increasing function of gold."""
    gold = np.round(rng.uniform(0, 5, n), 1)  # one decimal: every format writes it exactly
    pred = np.round(gold / 5 * 1.8 - 0.9, 4) if monotone else np.round(rng.uniform(-0.95, 0.95, n), 4)
    return [(f"L{i}", f"R {p}", float(g), float(p)) for i, (g, p) in enumerate(zip(gold, pred, strict=True))]


def write_fixture(root: Path, *, monotone: bool = False, seed: int = 0) -> dict:
    """All 7 tasks in SentEval's layout; returns {task: {subset_or_split: [(s1, s2, gold, pred)]}}."""
    rng = np.random.default_rng(seed)
    truth: dict = {}
    for year, subsets in sts.STS_SUBSETS.items():
        folder = root / "STS" / f"{year}-en-test"
        folder.mkdir(parents=True)
        truth[year] = {}
        for k, name in enumerate(subsets):
            pairs = _pairs(rng, 6 + 2 * k, monotone)
            truth[year][name] = pairs
            inputs = [f"{a}\t{b}" for a, b, _, _ in pairs]
            golds = [f"{g:.2f}" for _, _, g, _ in pairs]
            if year in ("STS15", "STS16"):  # unscored pairs: empty gold lines, must be skipped
                for at in (0, 3, len(inputs)):
                    inputs.insert(at, f"L unscored\tR {rng.uniform(-1, 1):.4f}")
                    golds.insert(at, "")
            (folder / f"STS.input.{name}.txt").write_text("\n".join(inputs) + "\n")
            (folder / f"STS.gs.{name}.txt").write_text("\n".join(golds) + "\n")
    stsb = root / "STS" / "STSBenchmark"
    stsb.mkdir()
    truth["STSBenchmark"] = {}
    for split, fname in STSB_SPLITS.items():
        pairs = _pairs(rng, 12, monotone)
        truth["STSBenchmark"][split] = pairs
        lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{g:.3f}\t{a}\t{b}" for i, (a, b, g, _) in enumerate(pairs)]
        lines[1] += "\tsource note\tanother"  # the original release has extra columns on some lines
        (stsb / fname).write_text("\n".join(lines) + "\n")
    sick = root / "SICK"
    sick.mkdir()
    truth["SICKRelatedness"] = {}
    for split, fname in SICK_SPLITS.items():
        pairs = _pairs(rng, 15, monotone)
        truth["SICKRelatedness"][split] = pairs
        lines = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
        lines += [f"{i}\t{a}\t{b}\t{g:.1f}\tNEUTRAL" for i, (a, b, g, _) in enumerate(pairs)]
        end = "\r\n" if split == "test" else "\n"  # SICK test ships with CRLF
        (sick / fname).write_bytes((end.join(lines) + end).encode())
    return truth


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_fixture(tmp_path)


def _ref(pairs: list) -> dict:
    pred = np.array([p for *_, p in pairs])
    gold = np.array([g for _, _, g, _ in pairs])
    return {
        "spearman": stats.spearmanr(pred, gold)[0] * 100,
        "pearson": stats.pearsonr(pred, gold)[0] * 100,
        "n": len(pairs),
    }


# ----------------------------------------------------------------------------- loaders


def test_loaders_read_every_format_and_quirk(data):
    root, truth = data
    suite = sts.load_suite(root)
    assert [t.name for t in suite] == list(sts.TASKS)
    for task in suite:
        split_truth = truth[task.name] if task.name.startswith("STS1") else {"test": truth[task.name]["test"]}
        assert [s.name for s in task.subsets] == list(split_truth)
        for sub in task.subsets:
            pairs = split_truth[sub.name]  # STS15/16: the unscored pairs are gone
            assert sub.sentences1 == tuple(a for a, *_ in pairs)
            assert sub.sentences2 == tuple(b for _, b, *_ in pairs)  # no stray '\r' from CRLF
            np.testing.assert_allclose(sub.gold, [g for _, _, g, _ in pairs])


def test_subset_names_match_senteval_and_files():
    assert sts.STS_SUBSETS["STS12"] == ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews")
    assert sts.STS_SUBSETS["STS13"] == ("FNWN", "headlines", "OnWN")
    assert sts.STS_SUBSETS["STS16"] == ("answer-answer", "headlines", "plagiarism", "postediting", "question-question")


def test_whitespace_is_normalized_like_senteval(tmp_path):
    write_fixture(tmp_path)
    path = tmp_path / "STS" / "STSBenchmark" / "sts-test.csv"
    path.write_text("g\tf\ty\t1\t2.5\t  a  man\tplays \tx\n" + "g\tf\ty\t2\t3.5\tb\tc\n")
    sub = sts.load_stsb(tmp_path, "test").subsets[0]
    assert sub.sentences1 == ("a man", "b") and sub.sentences2 == ("plays", "c")


# ----------------------------------------------------------------------------- protocol


def test_monotone_similarity_gives_spearman_100(tmp_path):
    write_fixture(tmp_path, monotone=True)
    results = sts.evaluate_sts(angle_embed, tmp_path)
    for name in (*sts.TASKS, "avg"):
        assert results[name] == pytest.approx(100.0, abs=1e-9), name
    for name, detail in results["details"].items():
        for sub in detail["subsets"].values():
            assert sub["spearman"] == pytest.approx(100.0, abs=1e-9), name


def test_aggregation_matches_scipy(data):
    root, truth = data
    results = sts.evaluate_sts(angle_embed, root)
    for year in sts.STS_SUBSETS:
        detail = results["details"][year]
        subsets = {name: _ref(pairs) for name, pairs in truth[year].items()}
        pooled = _ref([p for pairs in truth[year].values() for p in pairs])
        sizes = [s["n"] for s in subsets.values()]
        for key in ("spearman", "pearson"):
            values = [s[key] for s in subsets.values()]
            assert detail["all"][key] == pytest.approx(pooled[key], abs=1e-6)
            assert detail["mean"][key] == pytest.approx(np.mean(values), abs=1e-6)
            assert detail["wmean"][key] == pytest.approx(np.dot(values, sizes) / sum(sizes), abs=1e-6)
            for name, ref in subsets.items():
                assert detail["subsets"][name][key] == pytest.approx(ref[key], abs=1e-6)
        assert detail["all"]["n"] == sum(sizes) and [s["n"] for s in detail["subsets"].values()] == sizes
        assert results[year] == pytest.approx(pooled["spearman"], abs=1e-6)  # STS12-16 report 'all'
        # 'all' really differs from mean/wmean here, so the test tells them apart.
        assert abs(detail["all"]["spearman"] - detail["mean"]["spearman"]) > 1e-3
    for task in ("STSBenchmark", "SICKRelatedness"):  # test split, not train/dev
        assert results[task] == pytest.approx(_ref(truth[task]["test"])["spearman"], abs=1e-6)
        assert list(results["details"][task]["subsets"]) == ["test"]
    assert results["avg"] == pytest.approx(np.mean([results[t] for t in sts.TASKS]), abs=1e-12)


def test_dev_mode_uses_stsb_dev_and_sick_trial(data):
    root, truth = data
    results = sts.evaluate_sts(angle_embed, root, mode="dev")
    assert set(results) == {"STSBenchmark", "SICKRelatedness", "avg", "details"}
    for task in ("STSBenchmark", "SICKRelatedness"):
        assert results[task] == pytest.approx(_ref(truth[task]["dev"])["spearman"], abs=1e-6)
        assert list(results["details"][task]["subsets"]) == ["dev"]
    assert results["avg"] == pytest.approx((results["STSBenchmark"] + results["SICKRelatedness"]) / 2)
    with pytest.raises(ValueError, match="STS12.*no dev split"):
        sts.evaluate_sts(angle_embed, root, mode="dev", tasks=["STS12"])


def test_embed_fn_called_once_with_unique_sentences(data):
    root, truth = data
    calls: list[list[str]] = []

    def embed(sentences):
        calls.append(list(sentences))
        return angle_embed(sentences)

    results = sts.evaluate_sts(embed, root, tasks=["STS16", "SICKRelatedness"])
    assert len(calls) == 1
    expected = {s for name in ("STS16",) for pairs in truth[name].values() for a, b, *_ in pairs for s in (a, b)}
    expected |= {s for a, b, *_ in truth["SICKRelatedness"]["test"] for s in (a, b)}
    assert len(calls[0]) == len(set(calls[0])) and set(calls[0]) == expected
    assert set(results) == {"STS16", "SICKRelatedness", "avg", "details"}


def test_unknown_task_and_mode(data):
    root, _ = data
    with pytest.raises(ValueError, match=r"'STS17'.*valid tasks: STS12, STS13"):
        sts.evaluate_sts(angle_embed, root, tasks=["STS12", "STS17"])
    with pytest.raises(ValueError, match="mode"):
        sts.evaluate_sts(angle_embed, root, mode="train")


def test_zero_embedding_counts_as_cosine_zero_and_shape_is_checked(data):
    root, truth = data

    def embed(sentences):  # "L0" (first pair) embeds to the zero vector: SentEval scores it 0
        return angle_embed(sentences) * np.array([[s != "L0"] for s in sentences], np.float32)

    results = sts.evaluate_sts(embed, root, tasks=["STSBenchmark"])
    a, b, g, _ = truth["STSBenchmark"]["test"][0]
    expected = _ref([(a, b, g, 0.0), *truth["STSBenchmark"]["test"][1:]])
    assert results["details"]["STSBenchmark"]["all"] == pytest.approx(expected)
    suite = sts.load_suite(root, tasks=["STSBenchmark"])
    sentences = sts.unique_sentences(suite)
    with pytest.raises(ValueError, match="shape"):
        sts.score_suite(suite, sentences, angle_embed(sentences)[:-1])


def test_constant_prediction_gives_nan_not_a_crash():
    assert math.isnan(sts.correlation(np.ones(4), np.arange(4.0))["spearman"])
    assert sts.correlation(np.ones(1), np.ones(1))["n"] == 1


def test_format_table():
    table = sts.format_table({"STSBenchmark": 76.854, "STS12": 68.4, "avg": 72.627, "details": {}})
    assert table.splitlines() == [
        "+-------+--------------+-------+",
        "| STS12 | STSBenchmark |  Avg. |",
        "+-------+--------------+-------+",
        "| 68.40 |    76.85     | 72.63 |",
        "+-------+--------------+-------+",
    ]


# ----------------------------------------------------------------------------- bad inputs


def _replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_bytes().decode().split("\n")
    lines[lineno - 1] = text
    path.write_bytes("\n".join(lines).encode())


S12, S16 = "STS/STS12-en-test", "STS/STS16-en-test"
STSB, SICK = "STS/STSBenchmark/sts-test.csv", "SICK/SICK_test_annotated.txt"
BAD_INPUTS = {
    # name: (path relative to the fixture root, mutation of that path, 1-based line or None)
    "missing folder": ("STS/STS14-en-test", shutil.rmtree, None),
    "missing input": (f"{S12}/STS.input.MSRvid.txt", Path.unlink, None),
    "missing gold": (f"{S12}/STS.gs.MSRvid.txt", Path.unlink, None),
    "missing stsb": ("STS/STSBenchmark/sts-test.csv", Path.unlink, None),
    "missing sick": (SICK, Path.unlink, None),
    "gold too short": (f"{S12}/STS.gs.MSRpar.txt", lambda p: p.write_text("1.0\n2.0\n"), 3),
    "input too short": (f"{S12}/STS.input.MSRpar.txt", lambda p: p.write_text("a\tb\n"), 2),
    "three fields": (f"{S12}/STS.input.MSRpar.txt", lambda p: _replace_line(p, 4, "a\tb\tc"), 4),
    "one field": (f"{S16}/STS.input.headlines.txt", lambda p: _replace_line(p, 2, "a b"), 2),
    "gold not a number": (f"{S12}/STS.gs.MSRpar.txt", lambda p: _replace_line(p, 5, "4.0x"), 5),
    "gold nan": (f"{S12}/STS.gs.MSRpar.txt", lambda p: _replace_line(p, 2, "nan"), 2),
    "stsb short line": (STSB, lambda p: _replace_line(p, 3, "g\tf\ty\t1\t2.0\tonly one"), 3),
    "stsb score": (STSB, lambda p: _replace_line(p, 7, "g\tf\ty\t1\tfive\ta\tb"), 7),
    "sick fields": (SICK, lambda p: _replace_line(p, 3, "1\ta\tb\r"), 3),
    "sick score": (SICK, lambda p: _replace_line(p, 6, "1\ta\tb\thigh\tNEUTRAL\r"), 6),
    "sick no header": (SICK, lambda p: _replace_line(p, 1, "0\ta\tb\t3.0\tNEUTRAL\r"), 1),
    "not utf-8": (f"{S12}/STS.input.MSRpar.txt", lambda p: p.write_bytes(b"caf\xe9\tx\n"), None),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_and_line(data, case):
    root, _ = data
    relative, mutate, lineno = BAD_INPUTS[case]
    mutate(root / relative)
    with pytest.raises(sts.StsDataError) as info:
        sts.load_suite(root)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(root / relative) in message
    if lineno is not None:
        assert f"{root / relative}:{lineno}:" in message
    if case.startswith("missing"):
        assert "launch/download_senteval_sts.sh" in message


def test_missing_sts_dir_says_how_to_download(tmp_path):
    with pytest.raises(sts.StsDataError, match=r"nowhere.*launch/download_senteval_sts\.sh"):
        sts.load_suite(tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(sts.StsDataError, match=r"a_file is a file, not a folder"):
        sts.load_suite(tmp_path / "a_file")


# ----------------------------------------------------------------------------- CLI (no model)


def test_cli_prints_table_and_writes_json(data, monkeypatch, capsys):
    root, truth = data
    monkeypatch.setattr(evaluate, "_load_embed_fn", lambda args: (angle_embed, args.model))
    out = root / "results" / "r.json"
    assert (
        evaluate.main(
            ["--model", "unused", "--sts-dir", str(root), "--tasks", "STS12", "STSBenchmark", "--json", str(out)]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "STS test, unused"  # the table says what it is, of which model
    header = lines[2]
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["STS12", "STSBenchmark", "Avg."]
    written = json.loads(out.read_text())
    assert set(written) == {"STS12", "STSBenchmark", "avg", "details"}
    assert written["STSBenchmark"] == pytest.approx(_ref(truth["STSBenchmark"]["test"])["spearman"], abs=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_cli_json_writes_nan_as_null(tmp_path):
    evaluate.write_json_atomic(tmp_path / "x.json", {"STS12": float("nan"), "details": {"a": {"b": math.nan}}})
    assert json.loads((tmp_path / "x.json").read_text()) == {"STS12": None, "details": {"a": {"b": None}}}


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--sts-dir", "{root}/nowhere"], "download_senteval_sts.sh"),
        (["--sts-dir", "{root}", "--tasks", "STS99"], "STS99"),
        (["--sts-dir", "{root}", "--mode", "dev", "--tasks", "STS12"], "no dev split"),
    ],
)
def test_cli_data_errors_exit_2_with_one_line(data, capsys, extra, needle):
    root, _ = data
    argv = ["--model", "unused", *(a.format(root=root) for a in extra)]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_model_load_failure_exits_2(data, tmp_path, capsys):
    root, _ = data
    not_a_model = tmp_path / "empty_model"
    not_a_model.mkdir()
    assert evaluate.main(["--model", str(not_a_model), "--sts-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "cannot load model" in err and "config.json" in err and err.count("\n") == 1


def test_cli_requires_a_model(capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--sts-dir", "x"])
    assert info.value.code == 2 and "--model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- download script


def _bash(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_download_script_syntax_and_help():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    shown = _bash("--help")
    assert shown.returncode == 0 and "Usage: download_senteval_sts.sh" in shown.stdout
    assert "senteval.tar" in shown.stdout
    assert _bash().returncode == 2 and _bash("--bogus", "x").returncode == 2
    assert _bash("--source", "ftp", "x").returncode == 2


def _fake_curl(tmp_path: Path, served: Path) -> dict:
    """A `curl` on PATH that serves files from `served` by the URL's basename (no network)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    curl = bin_dir / "curl"
    curl.write_text(
        '#!/usr/bin/env bash\nset -eu\nout=""; url=""\n'
        "while (($#)); do\n"
        "  case $1 in --output) out=$2; shift 2;; -*) shift;; *) url=$1; shift;; esac\n"
        "done\n"
        f'cp "{served}/${{url##*/}}" "$out"\n'
    )
    curl.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _suite_values(root: Path) -> dict:
    return {k: v for k, v in sts.evaluate_sts(angle_embed, root).items() if k != "details"}


def test_download_script_simcse_tarball(data, tmp_path):
    root, _ = data
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "senteval.tar", "w") as tar:  # nested, plus a task we do not keep
        tar.add(root / "STS", "downstream/STS")
        tar.add(root / "SICK", "downstream/SICK")
        tar.add(root / "STS" / "STSBenchmark", "downstream/MR")
    dest = tmp_path / "dest"
    env = _fake_curl(tmp_path, served)
    done = _bash(str(dest), env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["SICK", "STS"]
    assert _suite_values(dest) == _suite_values(root)
    again = _bash(str(dest), env=env)
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.skipif(shutil.which("unzip") is None, reason="--source original needs unzip")
def test_download_script_original_releases(data, tmp_path):
    """Zips laid out like the SemEval releases (STS16: STS2016.* names, 4 input columns)."""
    root, _ = data
    served = tmp_path / "served"
    served.mkdir()
    zips = {
        "12": ("4/40/STS2012-en-test.zip", "test-gold"),
        "13": ("2/2f/STS2013-en-test.zip", "test-gs"),
        "14": ("8/8c/STS2014-en-test.zip", "sts-en-test-gs-2014"),
        "15": ("d/da/STS2015-en-test.zip", "test_evaluation_task2a"),
        "16": ("9/98/STS2016-en-test.zip", "sts2016-english-with-gs-v1.0"),
    }
    for year, (url, inner) in zips.items():
        with zipfile.ZipFile(served / url.rsplit("/", 1)[1], "w") as z:
            for f in (root / "STS" / f"STS{year}-en-test").iterdir():
                text = f.read_text()
                name = f.name
                if year == "16":
                    name = name.replace("STS.", "STS2016.", 1)
                    if ".input." in name:
                        text = "".join(line + "\tsrc1\tsrc2\n" for line in text.splitlines())
                z.writestr(f"{inner}/{name}", text)
    with tarfile.open(served / "Stsbenchmark.tar.gz", "w:gz") as tar:
        tar.add(root / "STS" / "STSBenchmark", "stsbenchmark")
    for split, fname in [
        ("train", "SICK_train.txt"),
        ("trial", "SICK_trial.txt"),
        ("test_annotated", "SICK_test_annotated.txt"),
    ]:
        with zipfile.ZipFile(served / f"sick_{split}.zip", "w") as z:
            z.writestr(fname, (root / "SICK" / fname).read_bytes())
            z.writestr("readme.txt", "SICK")
    dest = tmp_path / "dest"
    done = _bash("--source", "original", str(dest), env=_fake_curl(tmp_path, served))
    assert done.returncode == 0, done.stderr
    assert _suite_values(dest) == _suite_values(root)
