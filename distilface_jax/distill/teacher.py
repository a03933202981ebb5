"""The frozen teacher: its parameters, tokenizer and *own* sentence pipeline, and the cache of
its embeddings of a training corpus.

The teacher's embedding is what its sentence-transformers folder computes (Pooling, then
Normalize when listed), unless the config names the pooling. Its embeddings of a fixed corpus
never change, so they are computed once (bucketed by length, no dropout, sharded: each host
embeds every P-th sentence with its batches split over its local devices, and the slices are
all-gathered) and cached in a folder of the user's (`cache_folder`: `config.data.cache_dir` when
set, else $DISTILFACE_CACHE_DIR, else $XDG_CACHE_HOME/distilface_jax or ~/.cache/distilface_jax),
one file per key: the teacher's weights and pipeline, the corpus (path, size, modification time)
and the truncation length. Every later epoch, resumed run or new run with the same teacher and
corpus, in any workdir, reads the file instead. Each file appears by an atomic rename, so runs
sharing the folder at the same time never read a half-written one (two that compute the same key
at once write the same bytes; the last rename wins).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from distilface_jax.distill.student import check_vocabulary
from distilface_jax.interop import hf, st_folder
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.pooling import POOLERS
from distilface_jax.models.sentence_pipeline import PROJECTION, SentencePipeline
from distilface_jax.run_folder import atomic_file

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1  # bump when what the cache holds, or how it is computed, changes
CACHE_ENVIRONMENT = "DISTILFACE_CACHE_DIR"  # the user-level cache folder, when set


def cache_folder(configured: str = "") -> str:
    """Where teacher embeddings are cached: `configured` (`config.data.cache_dir`) when set, else
    $DISTILFACE_CACHE_DIR, else the user's cache directory ($XDG_CACHE_HOME or ~/.cache) /distilface_jax."""
    if configured:
        return configured
    if os.environ.get(CACHE_ENVIRONMENT):
        return os.environ[CACHE_ENVIRONMENT]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "distilface_jax")


@dataclasses.dataclass
class Teacher:
    pipeline: SentencePipeline  # its own: pooling, MLP head, width map, normalisation, truncation
    params: dict  # SentenceEncoder tree (+ its width map), float32 numpy
    source: str

    @property
    def config(self) -> EncoderConfig:
        return self.pipeline.encoder

    @property
    def tokenizer(self) -> Any:
        return self.pipeline.tokenizer

    @property
    def width(self) -> int:
        return self.pipeline.width

    def identity(self) -> str:
        """Hash of everything that decides the teacher's embeddings: weights, shape, pipeline."""
        digest = hashlib.sha256()
        for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(self.params), key=lambda item: str(item[0])):
            digest.update(str(path).encode())
            digest.update(np.ascontiguousarray(leaf, np.float32).tobytes())
        pipeline = self.pipeline
        described = [
            self.config.to_hf_dict(),
            pipeline.pooler,
            pipeline.apply_mlp,
            pipeline.normalize,
            sorted(self.tokenizer.get_vocab().items()),
        ]
        # Added only when set, so the caches of teachers without them keep their names.
        described += [{"width_map": pipeline.width_map}] if pipeline.width_map is not None else []
        described += [{"output_dim": pipeline.output_dim}] if pipeline.output_dim is not None else []
        digest.update(json.dumps(described).encode())
        return digest.hexdigest()


def load_teacher(
    name_or_path: str, *, pooler: str = "", normalize: Optional[bool] = None, max_length: int = 0
) -> Teacher:
    """The teacher of `name_or_path` with its own pipeline (its sentence-transformers folder's
    modules, `st_folder.load`); `pooler`/`normalize` override what the folder says (and are
    required when it says nothing), `max_length` > 0 cuts its truncation shorter."""
    try:
        loaded = hf.load_pretrained(name_or_path)
    except hf.ModelLoadError as error:
        raise hf.ModelLoadError(f"teacher: {error}") from error
    check_vocabulary(loaded.config, loaded.tokenizer, f"teacher {name_or_path}")
    folder = Path(loaded.source)
    if pooler and pooler not in POOLERS:
        raise ValueError(f"config.distill.teacher_pooler: unknown pooler {pooler!r}; expected one of {POOLERS}")
    try:
        pipeline, width_map = st_folder.load(
            folder,
            loaded.config,
            loaded.tokenizer,
            pooler=pooler or None,
            apply_mlp=pooler == "cls" and loaded.found_mlp,
        )
    except st_folder.UnsupportedModuleError as error:
        raise ValueError(f"teacher {name_or_path}: {error}") from None
    except st_folder.NoPoolingError:
        raise ValueError(
            f"teacher {name_or_path} is not a sentence-transformers folder (no Pooling module): "
            "set config.distill.teacher_pooler (and config.distill.teacher_normalize)"
        ) from None
    params = loaded.params if width_map is None else {**loaded.params, PROJECTION: width_map}
    positions = loaded.config.max_position_embeddings
    limit = min(positions, pipeline.max_length or positions)
    pipeline = pipeline.replace(
        normalize=pipeline.normalize if normalize is None else bool(normalize),
        max_length=min(max_length, limit) if max_length > 0 else limit,
    )
    return Teacher(pipeline, params, str(folder))


def embed_corpus(teacher: Teacher, sentences: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """[N, D] float32 teacher embeddings, deterministic (no dropout), bucketed by length, the
    work sharded over every device of every process; each process returns all N rows.

    A collective: in a multi-process run every process must call it (see `cached_embeddings`).
    Rows are dealt out strided (process p embeds sentences p, p+P, ...), so each host gets the
    same mix of lengths rather than one host all the long ones.
    """
    from distilface_jax.evaluation.inference import make_embed_fn

    count, index = jax.process_count(), jax.process_index()
    # Per-device batches as in a single-device run: the global row count scales with the devices.
    devices = jax.local_devices()
    embed = make_embed_fn(
        teacher.pipeline,
        teacher.params,
        batch_size=batch_size * len(devices),
        progress=index == 0,
        devices=devices,
    )
    mine = embed(list(sentences[index::count]))  # [ceil((N - index) / P), D]
    if count == 1:
        return mine
    from jax.experimental import multihost_utils

    rows = -(-len(sentences) // count)
    padded = np.zeros((rows, teacher.width), np.float32)  # process_allgather needs equal shapes
    padded[: len(mine)] = mine
    return assemble_strided(np.asarray(multihost_utils.process_allgather(padded)), len(sentences))


def assemble_strided(gathered: np.ndarray, num_rows: int) -> np.ndarray:
    """[P, ceil(N/P), D] slices (process p held rows p, p+P, ...; zero-padded) → the [N, D] table."""
    count = gathered.shape[0]
    table = np.empty((num_rows, gathered.shape[-1]), gathered.dtype)
    for process in range(count):
        held = len(range(process, num_rows, count))
        table[process::count] = gathered[process, :held]
    return table


def _read_cache(path: Optional[str], shape: tuple[int, int]) -> Optional[np.ndarray]:
    if not (path and os.path.exists(path)):
        return None
    try:
        embeddings = np.load(path, allow_pickle=False)  # never unpickle
    except (OSError, ValueError, EOFError) as error:
        logger.warning("ignoring unreadable teacher cache %s (%s)", path, error)
        return None
    if embeddings.shape == shape and np.all(np.isfinite(embeddings)):
        return embeddings
    logger.warning("ignoring teacher cache %s (shape %s, expected %s)", path, embeddings.shape, shape)
    return None


def _everywhere(flag: bool) -> bool:
    """True when `flag` is True on every process (a collective in multi-process runs)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def cache_path(cache_dir: str, corpus_name: str, corpus_fingerprint: dict, teacher: Teacher, num_sentences: int) -> str:
    """cache_dir/teacher.<corpus>.<hash>.npy; the hash covers the teacher (weights and pipeline),
    the corpus (path, size, mtime) and the truncation length."""
    key = json.dumps(
        {
            "version": _CACHE_VERSION,
            "teacher": teacher.identity(),
            "corpus": corpus_fingerprint,
            "max_length": teacher.pipeline.max_length,
            "num_sentences": num_sentences,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(corpus_name.rstrip("/")))[:60]
    return os.path.join(cache_dir, f"teacher.{stem}.{digest}.npy")


_ABANDONED_AFTER_S = 3600  # a cache file's write takes seconds; a temporary file this old was killed


def _remove_abandoned_writes(folder: str) -> None:
    """Deletes temporary files of cache writes killed before their rename (`.teacher.*.tmp-*`).
    The folder may be shared by runs writing at this moment, so only old ones go."""
    now = time.time()
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(".teacher.") and ".tmp-" in name:
            with contextlib.suppress(OSError):
                if now - os.path.getmtime(path) > _ABANDONED_AFTER_S:
                    os.unlink(path)


def cached_embeddings(
    teacher: Teacher,
    sentences: Sequence[str],
    path: Optional[str],
    compute: Callable[[Teacher, Sequence[str]], np.ndarray] = embed_corpus,
    also_read: Sequence[str] = (),
) -> tuple[np.ndarray, bool]:
    """(embeddings [N, D], read_from_cache). Read from `path`, else from the first of `also_read`
    (an older cache location) that holds them; else computed and written to `path`, atomically:
    a reader sees all or nothing. A cache folder that cannot be written is a warning, not an error.

    In a multi-process run the processes agree first: the cache is read only when every host
    finds it (a per-host cache folder may exist on some hosts only), else all compute together,
    since `compute` is a collective.
    """
    shape = (len(sentences), teacher.width)
    found, embeddings = path, _read_cache(path, shape)
    for older in also_read:
        if embeddings is None:
            found, embeddings = older, _read_cache(older, shape)
    if _everywhere(embeddings is not None):
        logger.info("teacher embeddings cache hit: %s", found)
        return embeddings, True
    embeddings = np.asarray(compute(teacher, sentences), np.float32)
    if path:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _remove_abandoned_writes(os.path.dirname(path))
            with atomic_file(path, sync=True) as handle:
                np.save(handle, embeddings)
        except OSError as error:
            logger.warning("teacher embeddings not cached (%s): a new run computes them again", error)
        else:
            logger.info("teacher embeddings of %d sentences -> %s", len(sentences), path)
    return embeddings, False
