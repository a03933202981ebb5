"""A training corpus of one or many files, cut into shards that workers and hosts read alone.

    data.train_file = "a.txt" | "a.txt,b.txt" | "parts/*.txt" | "gs://bucket/wiki-*.txt" | "nli.csv"
        ──resolve_inputs──> [Source] ──plan_shards──> [ShardSpec] ──read_shard──> K views, skipped

The corpus is its files concatenated in the order given (a glob's matches sorted by name),
each file's rows in file order, blank rows skipped. For one file these are exactly the rows
today's in-memory path reads (`data._read_unsupervised` / `_read_supervised`), so an example's
index, and with it the (seed, step) order of `data.global_batch_indices`, does not change.

Text files are cut into byte ranges of about `shard_bytes`, each end moved forward to the next
line start, so a worker reads its shard with one seek and no other shard's bytes (also on
gs://, through ranged reads). Lines are split as HF datasets' `text` builder splits them
(universal newlines: "\\n", "\\r\\n" and "\\r" end a line; nothing else does), which is what the
in-memory path reads. CSV/TSV files and hub data sets are read by HF datasets, as today (the
same parser gives the same rows), and cut into row ranges of its memory-mapped Arrow table; a
CSV on gs:// is first copied to the host's local cache (HF's csv reader needs a local file).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any

from distilface_jax import run_folder
from distilface_jax.training import data
from distilface_jax.training.mixture import split_lines  # the one line splitter (a mixture reads lines alike)

_TABLE_SUFFIXES = (".csv", ".tsv")
_ROW_BYTES_GUESS = 128  # a CSV shard of `shard_bytes` holds shard_bytes / 128 rows


@dataclasses.dataclass(frozen=True)
class Source:
    """One input: a local file, a gs:// object, or a hub data set id (path None)."""

    name: str  # the user's spelling, for messages
    path: str | None

    @property
    def is_text(self) -> bool:
        return self.path is not None and not self.path.lower().endswith(_TABLE_SUFFIXES)

    def fingerprint(self) -> dict[str, Any]:
        """Path, size and modification time (or the hub id): a different value is a changed corpus."""
        if self.path is None:
            return {"hub": self.name}
        if run_folder.is_remote(self.path):
            from etils import epath

            st = epath.Path(self.path).stat()
            return {"path": self.path, "size": int(st.length), "mtime": float(st.mtime)}
        st = os.stat(self.path)
        return {"path": self.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def size(self) -> int:
        return int(self.fingerprint()["size"])


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """Rows of one source: bytes [start, end) of a text file, or rows [start, end) of a table."""

    source: int  # index into the corpus's sources
    start: int
    end: int

    def to_json(self) -> list[int]:
        return [self.source, self.start, self.end]


def is_many(train_file: str) -> bool:
    """True for a list, a glob or a gs:// path: inputs only the token store reads."""
    return "," in train_file or any(c in train_file for c in "*?[") or run_folder.is_remote(train_file)


def resolve_inputs(train_file: str) -> list[Source]:
    """`a,b` (a list), globs (sorted matches) and gs:// paths → the corpus's sources, in order.

    A pattern without matches or a missing file is an error naming it; a single name that is
    no local path is a hub data set id, as for the in-memory path.
    """
    sources: list[Source] = []
    for item in [part.strip() for part in str(train_file).split(",") if part.strip()]:
        if run_folder.is_remote(item):
            sources += _remote_sources(item)
        elif any(c in item for c in "*?["):
            matches = sorted(p for p in glob.glob(os.path.expanduser(item)) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"training data pattern matches no file: {item}")
            sources += [Source(m, os.path.abspath(m)) for m in matches]
        else:
            resolved = data._resolve(item)
            sources.append(Source(resolved.name, resolved.path))
    if not sources:
        raise ValueError(f"training data {train_file!r} names no file")
    return sources


def _remote_sources(item: str) -> list[Source]:
    from etils import epath

    if not any(c in item for c in "*?["):
        if not epath.Path(item).exists():
            raise FileNotFoundError(f"training data file not found: {item}")
        return [Source(item, item)]
    folder, pattern = item.rsplit("/", 1)
    if any(c in folder for c in "*?["):
        raise ValueError(f"{item}: a gs:// pattern may use wildcards in its last part only")
    matches = sorted(str(p) for p in epath.Path(folder).glob(pattern))
    if not matches:
        raise FileNotFoundError(f"training data pattern matches no file: {item}")
    return [Source(m, m) for m in matches]


def localize(source: Source, cache_dir: str) -> Source:
    """A gs:// table (CSV) copied once into cache_dir/inputs/ (HF's csv reader needs a local file)."""
    if source.path is None or source.is_text or not run_folder.is_remote(source.path):
        return source
    from etils import epath

    fingerprint = source.fingerprint()
    local = os.path.join(cache_dir, "inputs", f"{int(fingerprint['size'])}-{os.path.basename(source.path)}")
    if not os.path.isfile(local) or os.path.getsize(local) != fingerprint["size"]:
        with run_folder.atomic_file(local, "wb") as handle, epath.Path(source.path).open("rb") as remote:
            while block := remote.read(1 << 24):
                handle.write(block)
    return Source(source.name, local)


# ----------------------------------------------------------------------------- planning


def plan_shards(sources: list[Source], shard_bytes: int, hf_cache_dir: str | None) -> list[ShardSpec]:
    """Every shard of the corpus, in corpus order: a pure function of the files and `shard_bytes`."""
    if shard_bytes < 1:
        raise ValueError(f"shard size must be >= 1 byte, got {shard_bytes}")
    specs: list[ShardSpec] = []
    for index, source in enumerate(sources):
        if source.is_text:
            bounds = _line_starts(source, shard_bytes)
        else:
            rows = _table(source, hf_cache_dir).num_rows
            step = max(1, shard_bytes // _ROW_BYTES_GUESS)
            bounds = sorted({*range(0, rows, step), rows})
        specs += [ShardSpec(index, a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return specs


def _line_starts(source: Source, shard_bytes: int) -> list[int]:
    """[0, ..., size]: every multiple of shard_bytes moved forward to the first line start at or
    after it (a line starts at 0 or right after a "\\n"; "\\r\\n" is never cut in two)."""
    size = source.size()
    bounds = [0]
    with _open(source.path) as handle:
        for offset in range(shard_bytes, size, shard_bytes):
            if offset <= bounds[-1]:
                continue
            handle.seek(offset - 1)
            handle.readline()  # to just past the "\n" ending the line that holds byte offset-1
            bounds.append(min(handle.tell(), size))
    if bounds[-1] != size:
        bounds.append(size)
    return sorted(set(bounds))


def _open(path: str):
    if run_folder.is_remote(path):
        from etils import epath

        return epath.Path(path).open("rb")
    return open(path, "rb")


def _table(source: Source, hf_cache_dir: str | None):
    return data._load_hf(data._Source(source.name, source.path), hf_cache_dir)


def table_columns(source: Source, hf_cache_dir: str | None) -> list[str]:
    return list(_table(source, hf_cache_dir).column_names)


# ----------------------------------------------------------------------------- reading


def read_shard(source: Source, spec: ShardSpec, fmt: str, hf_cache_dir: str | None) -> tuple[list[list[str]], int]:
    """The shard's K views of N non-blank rows (as `data._read_*` keeps them) and the blank rows skipped."""
    if source.is_text:
        if fmt != "unsup":
            raise ValueError(
                f"{source.name}: supervised data needs columns {', '.join(data.SUPERVISED_COLUMNS)} "
                f"(and optionally {data.HARD_NEGATIVE_COLUMN}); found columns ['text']"
            )
        with _open(source.path) as handle:
            handle.seek(spec.start)
            raw = handle.read(spec.end - spec.start)
        return data._keep_complete_rows([split_lines(raw.decode("utf-8"))])
    rows = _table(source, hf_cache_dir)[spec.start : spec.end]  # {column: [values]}
    return _table_views(rows, fmt, source.name)


def _table_views(columns: dict[str, list], fmt: str, name: str) -> tuple[list[list[str]], int]:
    """Column choice as `data._read_unsupervised` / `_read_supervised` make it."""
    found = list(columns)
    if fmt == "unsup":
        return data._keep_complete_rows([list(columns["text" if "text" in found else found[0]])])
    if any(c not in found for c in data.SUPERVISED_COLUMNS):
        raise ValueError(
            f"{name}: supervised data needs columns {', '.join(data.SUPERVISED_COLUMNS)} "
            f"(and optionally {data.HARD_NEGATIVE_COLUMN}); found columns {found}"
        )
    names = list(data.SUPERVISED_COLUMNS) + ([data.HARD_NEGATIVE_COLUMN] if data.HARD_NEGATIVE_COLUMN in found else [])
    return data._keep_complete_rows([list(columns[c]) for c in names])


def num_views(sources: list[Source], fmt: str, hf_cache_dir: str | None) -> int:
    """K: 1 unsupervised; 2 or 3 supervised (every file must agree on the hard-negative column)."""
    if fmt == "unsup":
        return 1
    counts = set()
    for source in sources:
        columns = ["text"] if source.is_text else table_columns(source, hf_cache_dir)
        counts.add(3 if data.HARD_NEGATIVE_COLUMN in columns else 2)
    if len(counts) > 1:
        raise ValueError(f"some files of the corpus have a {data.HARD_NEGATIVE_COLUMN} column and some do not")
    return counts.pop()
