"""Training data served from a token store: `TrainData`'s interface, rows read from disk.

    load_store_data(train_file, tokenizer, ...)  resolve inputs → plan shards → build (workers,
        hosts) → open → StoreData.batch(step, process_index, process_count)

A batch is `data.host_indices` (the same pure function of (seed, step) and the same host split
as the in-memory path) read from the store: for a corpus that fits in memory, the batches, and
so the training run, are bit-identical to `TrainData`'s (tests/training/test_token_store.py).

The store's folder is named after a fingerprint of everything that decides its contents (each
file's path, size and modification time, the tokenizer, max_seq_length, the format, the shard
size): a changed corpus gets a new store, and the stale one is named in a warning.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import re

from distilface_jax import run_folder
from distilface_jax.training import corpus, data, token_store, tokenize_workers

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StoreData:
    """Like `data.TrainData`, but rows stay on disk until a batch asks for them."""

    store: token_store.TokenStore
    global_batch_size: int
    seed: int = 0
    source: str = ""
    from_cache: bool = False  # True when the store was complete before this run

    def __post_init__(self):
        if self.num_examples < self.global_batch_size:
            raise ValueError(
                f"{self.source}: {self.num_examples} examples (after skipping {self.num_skipped_lines} "
                f"empty lines) are fewer than one global batch of {self.global_batch_size}"
            )

    @property
    def num_examples(self) -> int:
        return self.store.num_examples

    @property
    def num_views(self) -> int:
        return self.store.num_views

    @property
    def max_seq_length(self) -> int:
        return self.store.max_seq_length

    @property
    def num_skipped_lines(self) -> int:
        return self.store.num_skipped_lines

    @property
    def steps_per_epoch(self) -> int:
        return data.steps_per_epoch(self.num_examples, self.global_batch_size)

    def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
        """This process's part of global batch `step`: dict of int32 [B / process_count, K, L],
        read from the store row by row (no other host's rows)."""
        mine = data.host_indices(
            self.num_examples, step, self.global_batch_size, self.seed, process_index, process_count
        )
        return self.store.read_rows(mine)


def store_folder(cache_dir: str, sources: list[corpus.Source], fingerprint: dict) -> str:
    """cache_dir/store/<first file's name>.<fmt>.L<L>.<digest of the fingerprint>."""
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:20]
    return os.path.join(
        cache_dir, "store", f"{_stem(sources)}.{fingerprint['format']}.L{fingerprint['max_seq_length']}.{digest}"
    )


def _stem(sources: list[corpus.Source]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(sources[0].name.rstrip("/")))[:60]
    return stem + (f"+{len(sources) - 1}" if len(sources) > 1 else "")


def load_store_data(
    train_file: str,
    tokenizer,
    *,
    fmt: str,
    global_batch_size: int,
    seed: int = 0,
    max_seq_length: int = 32,
    cache_dir: str,
    store_dir: str = "",
    num_workers: int = 1,
    shard_bytes: int = 16 << 20,
    process_index: int = 0,
    process_count: int = 1,
    show_progress: bool = True,
) -> StoreData:
    """Builds (or finds) the token store of `train_file` and opens it.

    `cache_dir` is local (HF's Arrow copies of CSVs, gs:// CSV copies, the default store folder
    and a bucket store's local copy); `store_dir` = '' puts the store in cache_dir/store/.
    """
    if fmt not in ("unsup", "sup"):
        raise ValueError(f"config.data.format must be 'unsup' or 'sup', got {fmt!r}")
    hf_cache_dir = os.path.join(cache_dir, "hf_datasets")
    sources = [corpus.localize(s, cache_dir) for s in corpus.resolve_inputs(train_file)]
    fingerprint = {
        "version": token_store.STORE_VERSION,
        "sources": [s.fingerprint() for s in sources],
        "format": fmt,
        "tokenizer": data._tokenizer_fingerprint(tokenizer),
        "max_seq_length": int(max_seq_length),
        "shard_bytes": int(shard_bytes),
    }
    default = store_folder(cache_dir, sources, fingerprint)
    root = store_dir.rstrip("/") + "/" + os.path.basename(default) if store_dir else default
    local = os.path.join(cache_dir, "store", os.path.basename(default)) if run_folder.is_remote(root) else root
    plan = token_store.read_plan(local)
    complete_before = plan is not None and all(token_store.read_marker(local, i) for i in range(len(plan["shards"])))
    if plan is None:
        _note_changed_corpus(default, sources)
        plan = _plan(sources, fingerprint, tokenizer, fmt, max_seq_length, shard_bytes, hf_cache_dir)
    elif plan.get("fingerprint") != json.loads(json.dumps(fingerprint)):
        raise token_store.StoreError(f"{local}: built from another corpus (fingerprint differs); move it away")
    tokenize_workers.build(
        root,
        local,
        sources,
        plan,
        tokenizer,
        hf_cache_dir=hf_cache_dir,
        num_workers=num_workers,
        process_index=process_index,
        process_count=process_count,
        show_progress=show_progress and process_index == 0,
    )
    store = token_store.TokenStore(local, plan)
    return StoreData(store, global_batch_size, seed, source=str(train_file), from_cache=complete_before)


def _plan(sources, fingerprint, tokenizer, fmt, max_seq_length, shard_bytes, hf_cache_dir) -> dict:
    views = corpus.num_views(sources, fmt, hf_cache_dir)
    names = list(data.tokenize_views([["a"]] * views, tokenizer, max_seq_length))  # the arrays it returns
    specs = corpus.plan_shards(sources, shard_bytes, hf_cache_dir)
    return {
        "fingerprint": fingerprint,
        "names": names,
        "views": views,
        "max_seq_length": int(max_seq_length),
        "shards": [s.to_json() for s in specs],
    }


def _note_changed_corpus(folder: str, sources: list[corpus.Source]) -> None:
    """A store of the same files with another fingerprint: the corpus changed since it was built."""
    stem = folder.rsplit(".", 1)[0]
    names = [s.path or s.name for s in sources]
    for other in sorted(glob.glob(stem + ".*")):
        plan = token_store.read_plan(other) if os.path.isdir(other) else None
        built_from = [s.get("path", s.get("hub")) for s in plan["fingerprint"]["sources"]] if plan else None
        if built_from == names:
            log.warning(
                "%s changed since the token store %s was built (size, time or tokenizer differ); building a new store",
                ", ".join(s.name for s in sources),
                other,
            )
