"""Training data: read sentences, tokenize once (cached), serve deterministic per-host batches.

    text/csv file, HF hub id or mixture ──read──> K views of N sentences ──tokenize once──> int32 [N, K, L]
        ──(cache_dir/*.npz, atomic)──> TrainData.batch(step, process_index, process_count)

Unsupervised SimCSE (one sentence per line) has K = 1: each sentence is its own positive and
the model makes the two views with dropout, so the batch carries each sentence once.
Supervised SimCSE reads a CSV with columns sent0, sent1[, hard_neg]: K = 2 or 3.
A mixture (a comma list, a glob or a .mixture.json: `mixture.py` gives its rules) is read as
one sentence list (unsupervised only); its record goes with the data (`TrainData.mixture_record`).

Order: the examples of global batch `step` are a pure function of (seed, epoch, position)
(`global_batch_indices`), so a resumed run, or another host, sees exactly the same batches;
each epoch is a fresh permutation and the remainder that does not fill a batch is dropped, so
every step has one shape (one compiled step) and the same number of in-batch negatives. SimCSE's
HF Trainer keeps it instead (`dataloader_drop_last=False`) as a last, smaller batch: wiki1m at
batch 64 has no remainder (10⁶ = 15,625 × 64); the sup recipe drops fewer than 512 triplets an epoch.
Each process takes the contiguous slice of the global batch at its `process_index`, so the
concatenation of all hosts' slices in process order is the global batch
(what `jax.make_array_from_process_local_data` expects).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

from distilface_jax.run_folder import atomic_file
from distilface_jax.training import mixture

log = logging.getLogger(__name__)

SUPERVISED_COLUMNS = ("sent0", "sent1")
HARD_NEGATIVE_COLUMN = "hard_neg"
_FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".text")
_CACHE_VERSION = 1  # bump when the cached layout or tokenization rules change
_TOKENIZE_CHUNK = 50_000  # bounds the fast tokenizer's Python Encoding objects in memory

Arrays = Mapping[str, np.ndarray]


# ----------------------------------------------------------------------------- order


@functools.lru_cache(maxsize=2)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    # Memoised because a 1M-example permutation costs ~10 ms: paid once per epoch instead of
    # every step, where it would stall the host loop. Read-only so no caller can corrupt it.
    # Two kept: the epoch being trained and, at its end, the next (the prefetch thread runs ahead).
    # The same permutation as `default_rng([seed, epoch]).permutation(num_examples)` (which is
    # arange + shuffle), in int32 where it fits: a host holds 4 bytes per example, not 8 (80 MB
    # for a 20M-example corpus, the one part of a token-store host's memory that grows with N).
    dtype = np.int32 if num_examples < 2**31 else np.int64
    perm = np.arange(num_examples, dtype=dtype)
    np.random.default_rng([seed, epoch]).shuffle(perm)
    perm.setflags(write=False)
    return perm


def _examples(count: int) -> str:
    return f"{count} example{'s' if count != 1 else ''}"


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full global batches per epoch (the remainder is dropped; SimCSE's HF Trainer keeps it)."""
    return num_examples // global_batch_size


def global_batch_indices(num_examples: int, global_batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices [global_batch_size] of global batch `step` (counted from 0 over epochs).

    epoch, position = divmod(step, steps_per_epoch); the batch is slice `position` of the
    permutation drawn by `np.random.default_rng([seed, epoch])`. Nothing else enters.
    """
    if global_batch_size < 1 or seed < 0 or step < 0:
        raise ValueError(f"need global_batch_size >= 1, seed >= 0, step >= 0; got {global_batch_size}, {seed}, {step}")
    spe = steps_per_epoch(num_examples, global_batch_size)
    if spe == 0:
        raise ValueError(f"{_examples(num_examples)} are fewer than one global batch of {global_batch_size}")
    epoch, position = divmod(int(step), spe)
    perm = _epoch_permutation(int(num_examples), int(seed), epoch)
    return perm[position * global_batch_size : (position + 1) * global_batch_size].copy()


def host_batch(
    dataset_arrays: Arrays,
    step: int,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
) -> dict[str, np.ndarray]:
    """This process's contiguous slice of global batch `step`: arrays [global_batch_size /
    process_count, K, L]. Host slices concatenated in process order give the global batch."""
    num_examples = next(iter(dataset_arrays.values())).shape[0]
    mine = host_indices(num_examples, step, global_batch_size, seed, process_index, process_count)
    return {name: array[mine] for name, array in dataset_arrays.items()}


def host_indices(
    num_examples: int, step: int, global_batch_size: int, seed: int, process_index: int, process_count: int
) -> np.ndarray:
    """Example indices [global_batch_size / process_count] of this process's contiguous slice of
    global batch `step`: what `host_batch` gathers from memory and a token store from disk."""
    if process_count < 1 or global_batch_size % process_count:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by process_count {process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is outside [0, {process_count})")
    indices = global_batch_indices(num_examples, global_batch_size, seed, step)
    per_host = global_batch_size // process_count
    return indices[process_index * per_host : (process_index + 1) * per_host]


# ----------------------------------------------------------------------------- data set


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Tokenized training set plus the batching rule.

    arrays: `input_ids`, `attention_mask` and (BERT tokenizers) `token_type_ids`, int32
    [N, K, L]. Build it with `load_unsupervised` / `load_supervised`.
    """

    arrays: Arrays
    global_batch_size: int
    seed: int = 0
    num_skipped_lines: int = 0
    source: str = ""
    from_cache: bool = False  # True when the arrays came from the on-disk cache
    cache_file: str = ""  # where the token cache of these arrays is (or is to be written by `write_cache`)
    mixture_record: dict | None = None  # a mixture's `mixture.read` record (WORKDIR/mixture.json); else None

    def __post_init__(self):
        if self.num_examples < self.global_batch_size:
            skipped = self.num_skipped_lines
            raise ValueError(
                f"{self.source or 'data set'}: {_examples(self.num_examples)} (after skipping "
                f"{skipped} empty line{'s' if skipped != 1 else ''}) are fewer than one global batch of "
                f"{self.global_batch_size}"
            )

    @property
    def num_examples(self) -> int:
        return int(self.arrays["input_ids"].shape[0])

    @property
    def num_views(self) -> int:
        """K: 1 unsupervised (dropout makes the views), 2 or 3 supervised."""
        return int(self.arrays["input_ids"].shape[1])

    @property
    def max_seq_length(self) -> int:
        return int(self.arrays["input_ids"].shape[2])

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.num_examples, self.global_batch_size)

    def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """This process's part of global batch `step`: dict of int32 [B / process_count, K, L]."""
        return host_batch(
            self.arrays,
            step,
            global_batch_size=self.global_batch_size,
            seed=self.seed,
            process_index=process_index,
            process_count=process_count,
        )


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class _Source:
    name: str  # the user's spelling, for messages
    path: str | None  # absolute local file, or None for a hub data set id

    def fingerprint(self) -> dict[str, Any]:
        if self.path is None:
            return {"hub": self.name}
        st = os.stat(self.path)
        return {"path": self.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _resolve(path_or_name: str) -> _Source:
    """A local file if it exists; an error if it looks like a path but does not; else a hub id."""
    expanded = os.path.expanduser(str(path_or_name))
    if os.path.isfile(expanded):
        return _Source(str(path_or_name), os.path.abspath(expanded))
    if os.path.exists(expanded):
        raise ValueError(f"training data {path_or_name!r} is not a file")
    if expanded.lower().endswith(_FILE_SUFFIXES) or str(path_or_name).startswith(("/", ".", "~")):
        raise FileNotFoundError(f"training data file not found: {path_or_name}")
    return _Source(str(path_or_name), None)


def resolve_source(path_or_name: str, fmt: str = "unsup") -> _Source | mixture.Mixture:
    """A mixture (`mixture.is_mixture`: a comma list, a glob, a .mixture.json) parsed and
    checked, or one file / hub id (`_resolve`, as always). A mixture is one sentence per line."""
    if not mixture.is_mixture(path_or_name):
        return _resolve(path_or_name)
    if fmt != "unsup":
        raise ValueError(
            f"config.data.format={fmt!r} reads one CSV; a mixture ({path_or_name}) is one sentence per line "
            "('unsup'; config.data.token_store=True reads a list of CSVs concatenated)"
        )
    return mixture.parse(path_or_name)


def read_sentences(path_or_name: str) -> tuple[_Source | mixture.Mixture, list[str]]:
    """(source, sentences): the rows `load_unsupervised` holds, in its order (blank lines skipped)."""
    source = resolve_source(path_or_name)
    if isinstance(source, mixture.Mixture):
        return source, mixture.read(source)[0]
    views, _ = _read_unsupervised(source, None)
    return source, views[0]


def _load_hf(source: _Source, hf_cache_dir: str | None):
    """The `train` split via HF datasets: `csv` builder for .csv/.tsv, `text` otherwise."""
    import datasets  # slow import (~1 s): only on a cache miss

    if source.path is None:  # hub id; needs the network, so it cannot run in tests
        return datasets.load_dataset(source.name, split="train")
    if source.path.lower().endswith((".csv", ".tsv")):
        # na_filter=False keeps sentences like "NA" or "null" as text and empty cells as "".
        return datasets.load_dataset(
            "csv",
            data_files=source.path,
            split="train",
            cache_dir=hf_cache_dir,
            na_filter=False,
            delimiter="\t" if source.path.lower().endswith(".tsv") else ",",
        )
    return datasets.load_dataset("text", data_files=source.path, split="train", cache_dir=hf_cache_dir)


def _is_blank(value: Any) -> bool:
    return value is None or not str(value).strip()


def _keep_complete_rows(columns: list[list[Any]]) -> tuple[list[list[str]], int]:
    """Drop rows with any empty / whitespace-only / missing field; return (kept, dropped)."""
    keep = [i for i in range(len(columns[0])) if not any(_is_blank(col[i]) for col in columns)]
    kept = [[str(col[i]) for i in keep] for col in columns]
    return kept, len(columns[0]) - len(keep)


def _read_unsupervised(source: _Source, hf_cache_dir: str | None = None) -> tuple[list[list[str]], int]:
    """One view: the `text` column (or a CSV's first column). Returns ([sentences], skipped)."""
    ds = _load_hf(source, hf_cache_dir)
    column = "text" if "text" in ds.column_names else ds.column_names[0]
    return _keep_complete_rows([list(ds[column])])


def _read_supervised(source: _Source, hf_cache_dir: str | None = None) -> tuple[list[list[str]], int]:
    """Views sent0, sent1[, hard_neg] of a SimCSE NLI-style CSV. Returns (views, skipped rows)."""
    ds = _load_hf(source, hf_cache_dir)
    found = list(ds.column_names)
    if any(c not in found for c in SUPERVISED_COLUMNS):
        raise ValueError(
            f"{source.name}: supervised data needs columns {', '.join(SUPERVISED_COLUMNS)} "
            f"(and optionally {HARD_NEGATIVE_COLUMN}); found columns {found}"
        )
    names = list(SUPERVISED_COLUMNS) + ([HARD_NEGATIVE_COLUMN] if HARD_NEGATIVE_COLUMN in found else [])
    return _keep_complete_rows([list(ds[c]) for c in names])


# ----------------------------------------------------------------------------- tokenizing


def tokenize_views(views: list[list[str]], tokenizer: Any, max_seq_length: int) -> dict[str, np.ndarray]:
    """K lists of N sentences -> int32 arrays [N, K, L], padded to L = max_seq_length.

    `token_type_ids` is included only when the tokenizer returns it (BERT, not DistilBERT).
    """
    n, k = len(views[0]), len(views)
    out: dict[str, np.ndarray] = {}
    for v, sentences in enumerate(views):
        for start in range(0, n, _TOKENIZE_CHUNK):
            enc = tokenizer(
                sentences[start : start + _TOKENIZE_CHUNK],
                padding="max_length",
                truncation=True,
                max_length=max_seq_length,
                return_tensors="np",
            )
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                if name in enc:
                    if name not in out:
                        out[name] = np.zeros((n, k, max_seq_length), np.int32)
                    out[name][start : start + _TOKENIZE_CHUNK, v] = enc[name]
    return out


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of everything that decides token ids: class, vocab, normalizer, special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        desc = json.loads(backend.to_str())
        # Padding/truncation state changes as a side effect of tokenizer calls, not the ids.
        desc.pop("padding", None)
        desc.pop("truncation", None)
        text = json.dumps(desc, sort_keys=True)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    text += type(tokenizer).__name__ + repr(list(tokenizer.model_input_names))
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(cache_dir: str, source: _Source, tokenizer: Any, max_seq_length: int, fmt: str) -> str:
    """cache_dir/<name>.<fmt>.L<max_seq_length>.<hash>.npz; the hash covers the file's path,
    size and mtime (or hub id), the tokenizer, max_seq_length and the format."""
    key = json.dumps(
        {
            "version": _CACHE_VERSION,
            "source": source.fingerprint(),
            "format": fmt,
            "tokenizer": _tokenizer_fingerprint(tokenizer),
            "max_seq_length": max_seq_length,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(source.name.rstrip("/")))[:60]
    return os.path.join(cache_dir, f"{stem}.{fmt}.L{max_seq_length}.{digest}.npz")


_NOT_ARRAYS = ("num_skipped_lines", "mixture_record")  # the cache's entries that are no token arrays


def _save_atomic(path: str, arrays: Arrays, num_skipped_lines: int, mixture_record: dict | None = None) -> None:
    """Write to a temp file in the same folder, then os.replace: readers (another host, a
    resumed run) see either no cache or a complete one, never a half-written file.
    A mixture's record rides along as a JSON string (a plain unicode array: no pickle)."""
    extra = {} if mixture_record is None else {"mixture_record": np.array(json.dumps(mixture_record))}
    with atomic_file(path, "wb", sync=True) as f:
        np.savez(f, num_skipped_lines=np.int64(num_skipped_lines), **extra, **arrays)


def _load_cache(path: str) -> tuple[dict[str, np.ndarray], int, dict | None] | None:
    try:
        with np.load(path) as z:
            arrays = {name: z[name] for name in z.files if name not in _NOT_ARRAYS}
            record = json.loads(str(z["mixture_record"])) if "mixture_record" in z.files else None
            return arrays, int(z["num_skipped_lines"]), record
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("ignoring unreadable token cache %s (%s); re-tokenizing", path, e)
        return None


def _load(
    path_or_name: str,
    tokenizer: Any,
    fmt: str,
    read: Callable[[_Source, str | None], tuple[list[list[str]], int]],
    *,
    global_batch_size: int,
    seed: int,
    max_seq_length: int,
    cache_dir: str | None,
    write: bool,
) -> TrainData:
    source = resolve_source(path_or_name, fmt)
    path = cache_path(cache_dir, source, tokenizer, max_seq_length, fmt) if cache_dir else None
    cached = _load_cache(path) if path else None
    record = None
    if cached is not None:
        arrays, skipped, record = cached
        log.debug("token cache hit: %s", path)
    elif isinstance(source, mixture.Mixture):
        sentences, skipped, record = mixture.read(source)
        arrays = tokenize_views([sentences], tokenizer, max_seq_length)
    else:
        # HF datasets keeps an Arrow copy of what it reads: beside the token cache when that is
        # written now; else in a temporary folder, so that reading writes nothing of its own.
        with contextlib.ExitStack() as stack:
            hf_cache = None
            if write and cache_dir and source.path:
                hf_cache = os.path.join(cache_dir, "hf_datasets")
            elif source.path:
                hf_cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="hf_datasets."))
            views, skipped = read(source, hf_cache)
        if skipped:
            log.debug("%s: skipped %d empty lines/rows", source.name, skipped)
        arrays = tokenize_views(views, tokenizer, max_seq_length)
    train_data = TrainData(
        arrays=arrays,
        global_batch_size=global_batch_size,
        seed=seed,
        num_skipped_lines=skipped,
        source=source.name,
        from_cache=cached is not None,
        cache_file=path or "",
        mixture_record=record,
    )
    if write:
        write_cache(train_data)
    return train_data


def write_cache(train_data: TrainData) -> None:
    """Saves the token cache of data read with `write_cache=False` (a run writes it only once
    it knows it will go ahead); nothing when the arrays came from it or there is none."""
    if train_data.cache_file and not train_data.from_cache:
        _save_atomic(train_data.cache_file, train_data.arrays, train_data.num_skipped_lines, train_data.mixture_record)
        log.debug("tokenized %d examples -> %s", train_data.num_examples, train_data.cache_file)


def load_unsupervised(
    path_or_name: str,
    tokenizer: Any,
    *,
    global_batch_size: int,
    seed: int = 0,
    max_seq_length: int = 32,
    cache_dir: str | None = None,
    write_cache: bool = True,
) -> TrainData:
    """Unsupervised SimCSE data (K = 1): a .txt file with one sentence per line, a .csv whose
    first column holds the sentences, a hub data set id, or a mixture of text files (a comma
    list, a glob, a .mixture.json: `mixture.py`). Blank lines are skipped and counted in
    `num_skipped_lines`. `cache_dir=None` disables the token cache;
    `write_cache=False` reads it but leaves writing it to `write_cache(train_data)`."""
    return _load(
        path_or_name,
        tokenizer,
        "unsup",
        _read_unsupervised,
        global_batch_size=global_batch_size,
        seed=seed,
        max_seq_length=max_seq_length,
        cache_dir=cache_dir,
        write=write_cache,
    )


def load_supervised(
    path_or_name: str,
    tokenizer: Any,
    *,
    global_batch_size: int,
    seed: int = 0,
    max_seq_length: int = 32,
    cache_dir: str | None = None,
    write_cache: bool = True,
) -> TrainData:
    """Supervised SimCSE data: CSV columns sent0, sent1[, hard_neg] -> K = 2 or 3 views
    (anchor, positive[, hard negative]). Rows with an empty field are skipped and counted.
    `cache_dir` and `write_cache` as for `load_unsupervised`."""
    return _load(
        path_or_name,
        tokenizer,
        "sup",
        _read_supervised,
        global_batch_size=global_batch_size,
        seed=seed,
        max_seq_length=max_seq_length,
        cache_dir=cache_dir,
        write=write_cache,
    )
