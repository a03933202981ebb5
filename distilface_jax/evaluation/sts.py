"""SentEval STS protocol, as SimCSE reports it: loaders, scoring, table.

Layout under one ``sts_dir`` (what ``launch/download_senteval_sts.sh`` produces, the same as
SentEval's ``data/downstream``)::

    STS/STS12-en-test/STS.input.<subset>.txt   sentence1 <TAB> sentence2
    STS/STS12-en-test/STS.gs.<subset>.txt      gold score, one per line ('' = unscored pair)
    ...  STS13-en-test ... STS16-en-test
    STS/STSBenchmark/sts-{train,dev,test}.csv  score in column 5, sentences in 6 and 7 (1-based)
    SICK/SICK_{train,trial,test_annotated}.txt header line; sentences in 2-3, score in 4

Protocol (SentEval ``senteval/sts.py`` in the SimCSE fork + SimCSE ``evaluation.py``):
similarity = cosine of the two sentence embeddings (0 for a zero vector, as SentEval's
``nan_to_num``); the reported number is Spearman x 100. STS12-16 report 'all' (one Spearman
over the pooled pairs of every subset); STS-B and SICK-R report their test split (dev mode:
STS-B dev + SICK trial). ``avg`` is the plain mean over the requested tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

__all__ = [
    "TASKS",
    "DEV_TASKS",
    "STS_SUBSETS",
    "StsDataError",
    "StsSubset",
    "StsTask",
    "load_sts_year",
    "load_stsb",
    "load_sick",
    "load_suite",
    "unique_sentences",
    "correlation",
    "score_suite",
    "evaluate_suite",
    "evaluate_sts",
    "format_table",
]

# Subset names exactly as SentEval's STS1xEval classes list them (and as the files are named).
STS_SUBSETS: dict[str, tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    # STS13 without the SMT subset: it was never redistributed (license), SentEval drops it too.
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
TASKS: tuple[str, ...] = (*STS_SUBSETS, "STSBenchmark", "SICKRelatedness")
DEV_TASKS: tuple[str, ...] = ("STSBenchmark", "SICKRelatedness")

_STSB_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
_SICK_FILES = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
_DOWNLOAD_HINT = "get the SentEval STS data with `bash launch/download_senteval_sts.sh DIR` and pass --sts-dir DIR"

EmbedFn = Callable[[list[str]], np.ndarray]


class StsDataError(ValueError):
    """Missing or malformed STS data; the message names the path (and 1-based line)."""


@dataclass(frozen=True)
class StsSubset:
    """Scored sentence pairs: ``sentences1[i]`` vs ``sentences2[i]`` has gold score ``gold[i]``.

    ``gold`` is float64 ``[N]``; unscored pairs are already dropped.
    """

    name: str
    sentences1: tuple[str, ...]
    sentences2: tuple[str, ...]
    gold: np.ndarray

    def __len__(self) -> int:
        return len(self.gold)


@dataclass(frozen=True)
class StsTask:
    """One reported task: a list of subsets (one split for STS-B / SICK-R)."""

    name: str
    subsets: tuple[StsSubset, ...]


# ----------------------------------------------------------------------------- file reading


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise StsDataError(f"STS data file not found: {path}; {_DOWNLOAD_HINT}")


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file without their terminators ('\\n' or '\\r\\n').

    Split on '\\n' only (not ``str.splitlines``, which also breaks at U+2028, \\x1c, ...)
    so a stray control character inside a sentence cannot shift every later pair.
    """
    _require_file(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise StsDataError(f"{path}: not valid UTF-8 at byte {e.start}") from None
    lines = text.split("\n")
    if lines[-1] == "":  # the final terminator, not an empty record
        lines.pop()
    # SICK test ships with CRLF line ends.
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _clean(sentence: str) -> str:
    # SentEval keeps `s.split()` tokens and SimCSE's batcher joins them with ' ': whitespace
    # runs collapse, ends are trimmed. Doing the same keeps tokenization identical.
    return " ".join(sentence.split())


def _score(field: str, path: Path, lineno: int) -> float:
    try:
        value = float(field)
    except ValueError:
        raise StsDataError(f"{path}:{lineno}: score {field!r} is not a number") from None
    if not math.isfinite(value):
        raise StsDataError(f"{path}:{lineno}: score {field!r} is not finite")
    return value


def _fields(line: str, path: Path, lineno: int, want: int, *, exact: bool) -> list[str]:
    fields = line.split("\t")
    if (len(fields) != want) if exact else (len(fields) < want):
        need = f"{want}" if exact else f"at least {want}"
        raise StsDataError(f"{path}:{lineno}: expected {need} tab-separated fields, got {len(fields)}")
    return fields


def _subset(name: str, rows: list[tuple[str, str, float]], path: Path) -> StsSubset:
    if not rows:
        raise StsDataError(f"{path}: no scored sentence pairs")
    s1, s2, gold = zip(*rows, strict=True)
    return StsSubset(name, tuple(s1), tuple(s2), np.asarray(gold, dtype=np.float64))


# ----------------------------------------------------------------------------- loaders


def _load_sts_pairs(input_path: Path, gold_path: Path, name: str) -> StsSubset:
    """One STS12-16 subset; pairs whose gold line is empty are skipped (STS15/16 have many)."""
    inputs = _read_lines(input_path)
    golds = _read_lines(gold_path)
    if len(golds) != len(inputs):
        shorter = gold_path if len(golds) < len(inputs) else input_path
        raise StsDataError(
            f"{shorter}:{min(len(golds), len(inputs)) + 1}: line has no partner: {gold_path} has "
            f"{len(golds)} lines, {input_path} has {len(inputs)}; they must match line for line"
        )
    rows = []
    for lineno, (pair, gold) in enumerate(zip(inputs, golds, strict=True), start=1):
        fields = _fields(pair, input_path, lineno, 2, exact=True)
        if gold.strip() == "":  # unscored pair (SentEval: `raw_scores != ''`)
            continue
        rows.append((_clean(fields[0]), _clean(fields[1]), _score(gold.strip(), gold_path, lineno)))
    return _subset(name, rows, gold_path)


def _task_dir(sts_dir: Path, *parts: str) -> Path:
    if sts_dir.exists() and not sts_dir.is_dir():
        raise StsDataError(f"STS data directory {sts_dir} is a file, not a folder; {_DOWNLOAD_HINT}")
    if not sts_dir.is_dir():
        raise StsDataError(f"STS data directory not found: {sts_dir}; {_DOWNLOAD_HINT}")
    folder = sts_dir.joinpath(*parts)
    if not folder.is_dir():
        raise StsDataError(f"STS data folder not found: {folder}; {_DOWNLOAD_HINT}")
    return folder


def load_sts_year(sts_dir: str | Path, task: str) -> StsTask:
    """STS12..STS16 with all SentEval subsets, from ``sts_dir/STS/<task>-en-test``."""
    folder = _task_dir(Path(sts_dir), "STS", f"{task}-en-test")
    subsets = tuple(
        _load_sts_pairs(folder / f"STS.input.{name}.txt", folder / f"STS.gs.{name}.txt", name)
        for name in STS_SUBSETS[task]
    )
    return StsTask(task, subsets)


def load_stsb(sts_dir: str | Path, split: str = "test") -> StsTask:
    """STS Benchmark ``split`` ('train'|'dev'|'test'): one subset named after the split.

    Columns beyond the 7th (the original release has source notes on some lines) are
    ignored, as SentEval does.
    """
    path = _task_dir(Path(sts_dir), "STS", "STSBenchmark") / _STSB_FILES[split]
    rows = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        f = _fields(line, path, lineno, 7, exact=False)
        rows.append((_clean(f[5]), _clean(f[6]), _score(f[4].strip(), path, lineno)))
    return StsTask("STSBenchmark", (_subset(split, rows, path),))


def load_sick(sts_dir: str | Path, split: str = "test") -> StsTask:
    """SICK relatedness ``split`` ('train'|'dev' = SICK_trial|'test'): one subset named after the split."""
    path = _task_dir(Path(sts_dir), "SICK") / _SICK_FILES[split]
    lines = _read_lines(path)
    # SentEval skips the first line unconditionally; check it is a header so a file that lost
    # its header does not silently lose a pair.
    if not lines or _looks_numeric(lines[0].split("\t")[3:4]):
        raise StsDataError(f"{path}:1: expected a header line (pair_ID, sentence_A, sentence_B, relatedness_score)")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        f = _fields(line, path, lineno, 4, exact=False)
        rows.append((_clean(f[1]), _clean(f[2]), _score(f[3].strip(), path, lineno)))
    return StsTask("SICKRelatedness", (_subset(split, rows, path),))


def _looks_numeric(fields: list[str]) -> bool:
    try:
        return bool(fields) and math.isfinite(float(fields[0]))
    except ValueError:
        return False


def _check_tasks(tasks: Iterable[str] | None, mode: str) -> tuple[str, ...]:
    if mode not in ("test", "dev"):
        raise ValueError(f"unknown STS mode {mode!r}; valid: 'test', 'dev'")
    if isinstance(tasks, str):  # a lone name, not an iterable of one-letter "tasks"
        tasks = (tasks,)
    names = tuple(dict.fromkeys(tasks)) if tasks is not None else (TASKS if mode == "test" else DEV_TASKS)
    if not names:
        raise ValueError("no STS tasks requested")
    for name in names:
        if name not in TASKS:
            raise ValueError(f"unknown STS task {name!r}; valid tasks: {', '.join(TASKS)}")
        if mode == "dev" and name not in DEV_TASKS:
            raise ValueError(f"STS task {name!r} has no dev split; dev mode supports: {', '.join(DEV_TASKS)}")
    return names


def load_suite(sts_dir: str | Path, *, mode: str = "test", tasks: Iterable[str] | None = None) -> list[StsTask]:
    """Load the requested tasks (default: all 7 in test mode, STS-B + SICK-R in dev mode).

    Raises ``ValueError`` for an unknown task or mode, ``StsDataError`` for missing or bad files.
    """
    split = "test" if mode == "test" else "dev"
    loaded = []
    for name in _check_tasks(tasks, mode):
        if name == "STSBenchmark":
            loaded.append(load_stsb(sts_dir, split))
        elif name == "SICKRelatedness":
            loaded.append(load_sick(sts_dir, split))
        else:
            loaded.append(load_sts_year(sts_dir, name))
    return loaded


# ----------------------------------------------------------------------------- scoring


def unique_sentences(suite: Sequence[StsTask]) -> list[str]:
    """Every sentence of the suite once, in first-seen order (deterministic across runs)."""
    seen: dict[str, None] = {}
    for task in suite:
        for sub in task.subsets:
            seen.update(dict.fromkeys(sub.sentences1))
            seen.update(dict.fromkeys(sub.sentences2))
    return list(seen)


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """[N, H] -> [N, H] float64 rows of norm 1; all-zero rows stay zero (cosine 0, as SentEval)."""
    e = np.nan_to_num(np.asarray(embeddings, dtype=np.float64))
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)


def correlation(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson x 100 of ``pred`` [N] vs ``gold`` [N], plus ``n``.

    NaN when undefined (constant input or N < 2), as scipy would return.
    """
    n = len(gold)
    if n < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return {"spearman": math.nan, "pearson": math.nan, "n": n}
    return {
        "spearman": float(stats.spearmanr(pred, gold).statistic) * 100,
        "pearson": float(stats.pearsonr(pred, gold).statistic) * 100,
        "n": n,
    }


def _task_details(preds: list[np.ndarray], task: StsTask) -> dict:
    """SentEval's aggregation: per subset, 'all' (pooled pairs), 'mean', 'wmean' (by subset size)."""
    subsets = {sub.name: correlation(p, sub.gold) for p, sub in zip(preds, task.subsets, strict=True)}
    pooled = correlation(np.concatenate(preds), np.concatenate([s.gold for s in task.subsets]))
    sizes = np.array([len(s) for s in task.subsets], dtype=np.float64)

    def _avg(key: str, weights: np.ndarray | None) -> float:
        return float(np.average([subsets[s.name][key] for s in task.subsets], weights=weights))

    return {
        "all": pooled,
        "mean": {k: _avg(k, None) for k in ("spearman", "pearson")},
        "wmean": {k: _avg(k, sizes) for k in ("spearman", "pearson")},
        "subsets": subsets,
    }


def score_suite(suite: Sequence[StsTask], sentences: Sequence[str], embeddings: np.ndarray) -> dict:
    """Results dict from embeddings ``[len(sentences), H]`` of (at least) every suite sentence.

    Returns ``{task: spearman_all_x100, ..., "avg": mean, "details": {task: {...}}}``.
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(sentences):
        raise ValueError(f"expected embeddings of shape [{len(sentences)}, H], got {embeddings.shape}")
    unit = _unit_rows(embeddings)
    index = {s: i for i, s in enumerate(sentences)}
    results: dict = {}
    details: dict = {}
    for task in suite:
        preds = [
            np.einsum("nh,nh->n", unit[[index[s] for s in sub.sentences1]], unit[[index[s] for s in sub.sentences2]])
            for sub in task.subsets
        ]
        details[task.name] = _task_details(preds, task)
        # STS12-16: 'all'; STS-B / SICK-R have one subset, so 'all' is that split's number.
        results[task.name] = details[task.name]["all"]["spearman"]
    results["avg"] = float(np.mean([results[t.name] for t in suite]))
    results["details"] = details
    return results


def evaluate_suite(embed_fn: EmbedFn, suite: Sequence[StsTask]) -> dict:
    """Embed every unique sentence with ONE ``embed_fn`` call (it buckets), then score."""
    sentences = unique_sentences(suite)
    return score_suite(suite, sentences, np.asarray(embed_fn(sentences)))


def evaluate_sts(
    embed_fn: EmbedFn, sts_dir: str | Path, *, mode: str = "test", tasks: Iterable[str] | None = None
) -> dict:
    """SentEval STS evaluation of ``embed_fn(list[str]) -> np.ndarray [N, H]``.

    ``mode='test'``: STS12-16 ('all'), STS-B test, SICK-R test; ``mode='dev'``: STS-B dev and
    SICK trial. Returns ``{"STS12": float, ..., "avg": float, "details": {...}}`` where every
    number is a correlation x 100; see ``score_suite``.
    """
    return evaluate_suite(embed_fn, load_suite(sts_dir, mode=mode, tasks=tasks))


# ----------------------------------------------------------------------------- table


def format_table(results: dict, title: str | None = None) -> str:
    """SimCSE-README style table: task columns in canonical order, then 'Avg.'; two decimals;
    `title` (e.g. "test, best step 80") as a first line."""
    names = [t for t in TASKS if t in results]
    headers = [*names, "Avg."]
    cells = [f"{results[t]:.2f}" for t in names] + [f"{results['avg']:.2f}"]
    widths = [max(len(h), len(c)) + 2 for h, c in zip(headers, cells, strict=True)]
    rule = "+" + "+".join("-" * w for w in widths) + "+"

    def row(items: list[str]) -> str:
        return "|" + "|".join(item.center(w) for item, w in zip(items, widths, strict=True)) + "|"

    return "\n".join(
        ([f"STS ({title})" if not title.startswith("STS") else title] if title else [])
        + [rule, row(headers), rule, row(cells), rule]
    )
