"""Building a token store: shards tokenized by worker processes, shared out between hosts.

    host h of H takes shards h, h+H, h+2H, ... ──> its `num_workers` processes tokenize them
        (one shard per job: read its input range, tokenize, write shard + marker)
    ──> every host waits until every shard's marker exists, then reads the store

Workers are started with `spawn` (a fresh interpreter that imports no jax: forking a process
that has started jax's threads can deadlock). A shard with a marker is done: an interrupted
build resumes with the shards it has not finished; a marker whose shard file is missing or of
the wrong size is named in one line and the shard is tokenized again.

A store in a bucket (gs://): each host writes its shards in a local folder and uploads them
(the shard, then its marker); when all markers are in the bucket, each host copies the shards
it lacks into its local folder and reads them there (a local copy per host).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from distilface_jax import run_folder
from distilface_jax.training import corpus, data, token_store

log = logging.getLogger(__name__)

WAIT_SECONDS = 24 * 3600  # how long a host waits for the other hosts' shards
_POLL_SECONDS = 1.0
_worker: dict[str, Any] = {}


def _init_worker(tokenizer) -> None:
    # One process per core: the tokenizer's own thread pool would only oversubscribe it.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # Ctrl-C reaches the whole process group: the parent stops the pool; workers need no traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker["tokenizer"] = tokenizer


def tokenize_shard(job: tuple, tokenizer=None) -> tuple[int, int]:
    """Reads, tokenizes and writes one shard; returns (shard index, input lines it covered).
    `tokenizer` None: the worker process's own (set by `_init_worker`)."""
    folder, index, source, spec, fmt, max_seq_length, names, views_expected, hf_cache_dir = job
    views, skipped = corpus.read_shard(source, spec, fmt, hf_cache_dir)
    if views[0]:
        arrays = data.tokenize_views(views, tokenizer or _worker["tokenizer"], max_seq_length)
    else:  # a shard of blank lines only
        arrays = {name: np.zeros((0, views_expected, max_seq_length), np.int32) for name in names}
    if list(arrays) != list(names) or next(iter(arrays.values())).shape[1] != views_expected:
        raise token_store.StoreError(f"shard {index} of {source.name}: tokenized to {list(arrays)}, planned {names}")
    token_store.write_shard(folder, index, arrays, names, skipped)
    return index, len(views[0]) + skipped


def build(
    root: str,
    local: str,
    sources: Sequence[corpus.Source],
    plan: dict,
    tokenizer,
    *,
    hf_cache_dir: str | None,
    num_workers: int = 1,
    process_index: int = 0,
    process_count: int = 1,
    show_progress: bool = True,
) -> None:
    """Makes the store at `root` complete (this host's share tokenized, the others' awaited),
    with every shard also in `local` (the same folder unless `root` is a bucket)."""
    os.makedirs(local, exist_ok=True)
    token_store.write_plan(local, plan)
    remote = root != local
    if remote:
        _upload(local, root, token_store.PLAN_FILE, overwrite=False)
    specs = [corpus.ShardSpec(*s) for s in plan["shards"]]
    mine = range(process_index, len(specs), process_count)
    todo = [i for i in mine if not _done(root, local, i, remote)]
    if todo:
        _tokenize(
            local,
            root if remote else None,
            sources,
            specs,
            plan,
            todo,
            tokenizer,
            hf_cache_dir,
            num_workers,
            show_progress,
        )
    _wait_for_all(root, local, len(specs), remote)
    if remote:
        for index in range(len(specs)):
            if token_store.read_marker(local, index) is None:
                for suffix in (".npy", ".json"):  # the marker last, as when writing
                    _download(root, local, token_store.shard_name(index) + suffix)


def _done(root: str, local: str, index: int, remote: bool) -> bool:
    if remote:
        return _remote_marker_ok(root, index)
    problem = token_store.shard_problem(local, index)
    if problem is not None and os.path.exists(os.path.join(local, token_store.shard_name(index) + ".json")):
        log.warning("token store %s; tokenizing it again", problem)
    return problem is None


def _tokenize(local, upload_to, sources, specs, plan, todo, tokenizer, hf_cache_dir, num_workers, show_progress):
    for index in todo:  # a killed worker's temporary files of these shards (only this host writes them)
        for stale in glob.glob(os.path.join(local, f".{token_store.shard_name(index)}.*.tmp-*")):
            os.unlink(stale)
    jobs = [
        (
            local,
            i,
            sources[specs[i].source],
            specs[i],
            plan["fingerprint"]["format"],
            plan["max_seq_length"],
            plan["names"],
            plan["views"],
            hf_cache_dir,
        )
        for i in todo
    ]
    bar = tqdm(desc="tokenizing", unit=" lines", unit_scale=True, disable=not show_progress, dynamic_ncols=True)
    bar.set_postfix_str(f"{len(todo)} shards, {num_workers} worker(s)", refresh=False)
    try:
        if num_workers <= 1:
            # In this process, as the in-memory path tokenizes (passed, not global: two builds may
            # run in one process, e.g. hosts rehearsed as threads).
            _collect(map(functools.partial(tokenize_shard, tokenizer=tokenizer), jobs), bar, local, upload_to)
        else:
            context = multiprocessing.get_context("spawn")
            with _sigterm_raises(), context.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
                _collect(_interruptible(pool.imap_unordered(tokenize_shard, jobs)), bar, local, upload_to)
    finally:
        bar.close()


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises in the parent while the pool runs, so the pool's exit ends the workers: the
    default action would kill the parent alone and leave them tokenizing, orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interruptible(results):
    """Results of `imap_unordered`, waited for a second at a time: a bare wait does not let the
    parent see Ctrl-C/SIGTERM until a shard finishes (minutes), the pool left running."""
    while True:
        try:
            yield results.next(timeout=1.0)
        except multiprocessing.TimeoutError:
            continue
        except StopIteration:
            return


def _collect(results, bar, local: str, upload_to: str | None) -> None:
    for index, lines in results:
        if upload_to is not None:
            for suffix in (".npy", ".json"):  # the marker last: it says the shard is there
                _upload(local, upload_to, token_store.shard_name(index) + suffix, overwrite=True)
        bar.update(lines)  # tqdm's rate is then lines/s


def _wait_for_all(root: str, local: str, count: int, remote: bool) -> None:
    """Until every shard has its marker (the other hosts' shares); a timeout names what is missing."""
    missing = list(range(count))
    deadline, next_note = time.monotonic() + WAIT_SECONDS, time.monotonic() + 60
    while True:
        missing = [
            i for i in missing if not (_remote_marker_ok(root, i) if remote else token_store.read_marker(local, i))
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise token_store.StoreError(
                f"token store {root}: {len(missing)} shards never finished by the other hosts "
                f"(first: {token_store.shard_name(missing[0])}); is every host running?"
            )
        if time.monotonic() > next_note:
            log.info("token store: waiting for %d shards from the other hosts", len(missing))
            next_note = time.monotonic() + 60
        time.sleep(_POLL_SECONDS)


# ----------------------------------------------------------------------------- bucket copies


def _remote_marker_ok(root: str, index: int) -> bool:
    import json

    from etils import epath

    base = epath.Path(root) / token_store.shard_name(index)
    try:
        marker = json.loads((base.parent / (base.name + ".json")).read_text())
        return (base.parent / (base.name + ".npy")).stat().length == marker["bytes"]
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return False


def _upload(local: str, root: str, name: str, *, overwrite: bool) -> None:
    from etils import epath

    target = epath.Path(root) / name
    if not overwrite and target.exists():
        if target.read_text() != (epath.Path(local) / name).read_text():
            raise token_store.StoreError(f"{target}: holds another corpus's plan; move it away")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copy under a private name, then rename: another host checking `target` above must never read
    # a half-written file (it would call an identical plan another corpus's).
    partial = target.parent / f".{name}.{uuid.uuid4().hex}.partial"
    epath.Path(local, name).copy(partial, overwrite=True)
    partial.rename(target)


def _download(root: str, local: str, name: str) -> None:
    from etils import epath

    with run_folder.atomic_file(os.path.join(local, name), "wb") as handle, (epath.Path(root) / name).open("rb") as src:
        while block := src.read(1 << 24):
            handle.write(block)
