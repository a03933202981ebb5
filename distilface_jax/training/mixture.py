"""A training corpus as a mixture of text files: `config.data.train_file` in one shell word.

    "wiki.txt"                          one file (or a hub id): not a mixture, read as always
    "a.txt,b.txt" | "parts/*/*.txt"     a list of paths and/or globs: each source weight 1, no cap
    "recipe.mixture.json"               {"seed": 0, "sources": [{"path": "captions/*.txt",
                                          "weight": 2.0, "cap": 20000}, {"path": "wiki.txt"}]}

    parse(train_file) ──> Mixture (sources, resolved) ──read──> (sentences, record)

A mixture file's paths are relative to the mixture file's folder (absolute ones allowed); a
glob's matches, sorted, are one source each with that entry's weight and cap. Keys other than
"seed", "sources" and, per source, "path", "weight", "cap" are refused.

The sentence list, a pure function of the files and the spec (`read`):
  1. sources in listed order (glob matches sorted); each source's lines (universal newlines, as
     HF datasets' `text` reader splits them) stripped, blank lines skipped;
  2. cap c: a source with more than c lines keeps c of them, a sample drawn by
     `numpy.random.default_rng([seed, i, 0])` (i = the source's index in the resolved list,
     seed = the spec's "seed", default 0), kept in file order;
  3. deduplicated across the whole mixture: an exact string seen before (in an earlier source
     or earlier in the same one) is dropped, the first occurrence wins;
  4. weight w (default 1) on the n lines left: the source contributes round(w × n) lines (half
     rounds up): floor(w) full copies in file order, then the remaining round(w × n) − floor(w) × n
     lines, a sample drawn by `default_rng([seed, i, 1])`, in file order (so w < 1 subsamples);
  5. the sources' contributions concatenated in listed order.
`data.TrainData` holds that list; training visits it in the usual (seed, step)-deterministic
permutation (`data.global_batch_indices`), so every host and device count sees the same batches.

Refused, each in one line naming the spec, the source and the JSON key (`MixtureError`): a
missing file, a glob matching nothing, weight ≤ 0 or not a number, cap < 1 or not an integer,
a source with no non-blank line or nothing left after dedup (or after its weight), unknown keys,
malformed JSON, a gs:// path (the token store reads those).

`Mixture.fingerprint()` (each source's resolved path, size and modification time, its weight
and cap, the seed and the spec's form) names the mixture in the token cache's and the teacher
cache's keys; `read`'s record is written to WORKDIR/mixture.json and compared on resume.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from typing import Any

import numpy as np

MIXTURE_SUFFIX = ".mixture.json"
_SPEC_KEYS = ("seed", "sources")
_SOURCE_KEYS = ("path", "weight", "cap")
_GLOB_CHARS = "*?["
_VERSION = 1  # bump when the rules above change: every mixture fingerprint changes with it


class MixtureError(ValueError):
    """A bad mixture spec: `spec` is the train_file as written, `detail` what is wrong with it."""

    def __init__(self, spec: str, detail: str):
        super().__init__(f"{spec}: {detail}")
        self.spec, self.detail = spec, detail


@dataclasses.dataclass(frozen=True)
class Source:
    name: str  # as written (a glob's match: the matched path), for messages and the record
    path: str  # absolute local file
    weight: float = 1.0
    cap: int | None = None
    entry: str = ""  # where it was declared, for messages: "sources[1]" or "item 2"

    def fingerprint(self) -> dict[str, Any]:
        st = os.stat(self.path)
        file = {"path": self.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}  # as data._Source has it
        return {**file, "weight": self.weight, "cap": self.cap}


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A resolved mixture spec; `name` and `fingerprint()` as `data._Source` has them."""

    name: str  # the train_file as written
    form: str  # "list" (comma list / glob) or "file" (a .mixture.json)
    seed: int
    sources: tuple[Source, ...]
    path: str | None = None  # the mixture file, absolute (form "file")

    def fingerprint(self) -> dict[str, Any]:
        return {
            "mixture": _VERSION,
            "form": self.form,
            "spec": self.path or self.name,
            "seed": self.seed,
            "sources": [source.fingerprint() for source in self.sources],
        }


def is_mixture(train_file: str) -> bool:
    """True for a .mixture.json, a comma list or a glob on a local disk (gs:// is the token store's)."""
    name = str(train_file)
    if name.startswith("gs://") or "://" in name:
        return False
    return name.endswith(MIXTURE_SUFFIX) or "," in name or any(c in name for c in _GLOB_CHARS)


# ----------------------------------------------------------------------------- parsing


def parse(train_file: str) -> Mixture:
    """The spec's sources, resolved to existing files and checked; MixtureError names what is wrong."""
    spec = str(train_file)
    if spec.endswith(MIXTURE_SUFFIX) and "," not in spec:
        return _parse_file(spec)
    items = [part.strip() for part in spec.split(",")]
    if not any(items):
        raise MixtureError(spec, "names no file")
    sources: list[Source] = []
    for number, item in enumerate(items, start=1):
        if not item:
            continue
        if item.endswith(MIXTURE_SUFFIX):
            raise MixtureError(spec, f"{item}: a mixture file is the whole train_file, not an item of a list")
        sources += _expand(spec, item, os.getcwd(), 1.0, None, f"item {number}")
    return Mixture(spec, "list", 0, tuple(sources))


def _parse_file(spec: str) -> Mixture:
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.isfile(path):
        raise MixtureError(spec, "no such mixture file" if not os.path.exists(path) else "is not a file")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as error:
        raise MixtureError(spec, f"line {error.lineno} column {error.colno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError:
        raise MixtureError(spec, "not UTF-8") from None
    if not isinstance(document, dict):
        raise MixtureError(spec, 'must be a JSON object {"seed": ..., "sources": [...]}')
    _refuse_unknown(spec, document, _SPEC_KEYS, "")
    seed = document.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MixtureError(spec, f"seed must be an integer >= 0, got {json.dumps(seed)}")
    entries = document.get("sources")
    if not isinstance(entries, list) or not entries:
        raise MixtureError(spec, '"sources" must be a non-empty list of {"path": ..., "weight": ..., "cap": ...}')
    folder = os.path.dirname(path)
    sources: list[Source] = []
    for index, entry in enumerate(entries):
        where = f"sources[{index}]"
        if not isinstance(entry, dict):
            raise MixtureError(spec, f"{where}: must be an object with a path, got {json.dumps(entry)}")
        _refuse_unknown(spec, entry, _SOURCE_KEYS, where + ".")
        if not isinstance(entry.get("path"), str) or not entry["path"].strip():
            raise MixtureError(spec, f"{where}.path: a file or glob is required")
        weight = _weight(spec, entry.get("weight", 1.0), f"{where}.weight")
        cap = _cap(spec, entry.get("cap"), f"{where}.cap")
        sources += _expand(spec, entry["path"].strip(), folder, weight, cap, where)
    return Mixture(spec, "file", seed, tuple(sources), path)


def _refuse_unknown(spec: str, mapping: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = [key for key in mapping if key not in allowed]
    if unknown:
        raise MixtureError(spec, f"{where}{unknown[0]}: unknown key (allowed: {', '.join(allowed)})")


def _weight(spec: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MixtureError(spec, f"{where}: must be a number > 0, got {json.dumps(value)}")
    return float(value)


def _cap(spec: str, value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MixtureError(spec, f"{where}: must be an integer >= 1 (or left out), got {json.dumps(value)}")
    return value


def _expand(spec: str, item: str, folder: str, weight: float, cap: int | None, where: str) -> list[Source]:
    """One path or glob (relative to `folder`) → its sources; a glob's matches sorted."""
    if "://" in item:
        raise MixtureError(spec, f"{where}: {item}: a mixture reads local files (the token store reads gs://)")
    full = os.path.join(folder, os.path.expanduser(item))
    if any(c in item for c in _GLOB_CHARS):
        matches = sorted(p for p in glob.glob(full) if os.path.isfile(p))
        if not matches:
            raise MixtureError(spec, f"{where}: {item} matches no file")
        return [Source(m, os.path.abspath(m), weight, cap, where) for m in matches]
    if not os.path.isfile(full):
        raise MixtureError(spec, f"{where}: {item}: " + ("is not a file" if os.path.exists(full) else "no such file"))
    return [Source(item, os.path.abspath(full), weight, cap, where)]


# ----------------------------------------------------------------------------- reading


def split_lines(text: str) -> list[str]:
    """HF datasets' `text` builder: universal newlines, then lines split on "\\n" only, without
    their line break; no empty last line after a final line break."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_lines(spec: str, source: Source) -> tuple[list[str], int]:
    """The source's stripped non-blank lines in file order, and how many blank lines were skipped."""
    with open(source.path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise MixtureError(spec, f"{source.name}: line {line}: not UTF-8; convert the file to UTF-8") from None
    stripped = [line.strip() for line in split_lines(text)]
    kept = [line for line in stripped if line]
    return kept, len(stripped) - len(kept)


def sample_in_order(count: int, keep: int, seed: int, index: int, stream: int) -> np.ndarray:
    """`keep` of range(count) without replacement, sorted: rng([seed, index, stream]).choice."""
    chosen = np.random.default_rng([seed, index, stream]).choice(count, size=keep, replace=False)
    return np.sort(chosen)


def apply_cap(lines: list[str], cap: int | None, seed: int, index: int) -> list[str]:
    if cap is None or len(lines) <= cap:
        return lines
    return [lines[i] for i in sample_in_order(len(lines), cap, seed, index, 0)]


def deduplicate(per_source: list[list[str]]) -> list[list[str]]:
    """Each source's lines without any string seen before in the mixture (first occurrence wins)."""
    seen: set[str] = set()
    out = []
    for lines in per_source:
        kept = []
        for line in lines:
            if line not in seen:
                seen.add(line)
                kept.append(line)
        out.append(kept)
    return out


def contribution(count: int, weight: float) -> int:
    """round(weight × count), half up."""
    return int(math.floor(weight * count + 0.5))


def apply_weight(lines: list[str], weight: float, seed: int, index: int) -> list[str]:
    """floor(w) full copies, then a sample of the rest of round(w × n), in file order."""
    # round(w·n) >= floor(w)·n and <= (floor(w) + 1)·n, so 0 <= rest <= n.
    total, copies = contribution(len(lines), weight), int(math.floor(weight))
    rest = total - copies * len(lines)
    sample = [lines[i] for i in sample_in_order(len(lines), rest, seed, index, 1)] if rest else []
    return lines * copies + sample


def read(mixture: Mixture) -> tuple[list[str], int, dict[str, Any]]:
    """(sentences, blank lines skipped, record): the mixture's sentence list by the rules above
    and what each source gave (path, lines read, after cap, after dedup, contributed, weight, cap)."""
    spec = mixture.name
    read_per_source, skipped = [], 0
    for source in mixture.sources:
        lines, blank = read_lines(spec, source)
        if not lines:
            raise MixtureError(spec, f"{source.entry}: {source.name}: no training sentences (no non-blank line)")
        read_per_source.append(lines)
        skipped += blank
    capped = [
        apply_cap(lines, source.cap, mixture.seed, index)
        for index, (source, lines) in enumerate(zip(mixture.sources, read_per_source))
    ]
    unique = deduplicate(capped)
    sentences: list[str] = []
    rows = []
    for index, (source, lines) in enumerate(zip(mixture.sources, unique)):
        if not lines:
            raise MixtureError(
                spec, f"{source.entry}: {source.name}: nothing left after deduplication (all in earlier sources)"
            )
        contributed = apply_weight(lines, source.weight, mixture.seed, index)
        if not contributed:
            raise MixtureError(
                spec, f"{source.entry}: {source.name}: weight {source.weight:g} keeps none of its {len(lines)} lines"
            )
        sentences += contributed
        rows.append(
            {
                "path": source.path,
                "lines_read": len(read_per_source[index]),
                "after_cap": len(capped[index]),
                "after_dedup": len(lines),
                "contributed": len(contributed),
                "weight": source.weight,
                "cap": source.cap,
            }
        )
    record = {
        "spec": spec,
        "form": mixture.form,
        "seed": mixture.seed,
        "sentences": len(sentences),
        "sources": rows,
        "fingerprint": mixture.fingerprint(),
    }
    return sentences, skipped, record


def summary_lines(record: dict[str, Any]) -> list[str]:
    """One line per source for the log: what it read, kept and gave."""
    lines = [f"mixture {record['spec']}: {record['sentences']} sentences from {len(record['sources'])} sources"]
    for row in record["sources"]:
        cap = f", cap {row['cap']}" if row["cap"] is not None else ""
        lines.append(
            f"  {row['path']}: read {row['lines_read']}, after cap {row['after_cap']}, after dedup "
            f"{row['after_dedup']}, contributes {row['contributed']} (weight {row['weight']:g}{cap})"
        )
    return lines


def describe_change(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> str | None:
    """None when two mixture fingerprints agree; else what differs, in words (first difference)."""
    if saved == current:
        return None
    if saved is None:
        return "the run read its corpus without a mixture record (the token store reads a list as files concatenated)"
    if current is None:
        return "the run was trained on a mixture (mixture.json) and this config reads none"
    for key in ("form", "spec", "seed"):
        if saved.get(key) != current.get(key):
            return f"the mixture's {key} was {saved.get(key)!r}, now {current.get(key)!r}"
    old, new = saved.get("sources", []), current.get("sources", [])
    if len(old) != len(new):
        return f"the mixture had {len(old)} sources, now {len(new)}"
    for before, after in zip(old, new):
        for key in ("path", "weight", "cap", "size", "mtime_ns"):
            if before.get(key) != after.get(key):
                was, now = before.get(key), after.get(key)
                what = "changed on disk" if key in ("size", "mtime_ns") else f"{key} {was!r} → {now!r}"
                return f"source {after.get('path')}: {what}"
    return "the mixture differs"
