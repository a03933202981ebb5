"""The frozen teacher: its parameters, tokenizer and *own* sentence pipeline, and the cache of
its embeddings of a training corpus.

The teacher's embedding is what its sentence-transformers folder computes (Pooling, then
Normalize when listed), unless the config names the pooling. Its embeddings of a fixed corpus
never change, so they are computed once (bucketed by length, no dropout, sharded: each host
embeds every P-th sentence with its batches split over its local devices, and the slices are
all-gathered) and cached beside the tokenized data, keyed by the teacher's weights, the corpus
and the pipeline settings: every later epoch, resumed run or new run with the same teacher reads
the file instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
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
    embeddings = np.load(path, allow_pickle=False)  # never unpickle
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


def cached_embeddings(
    teacher: Teacher,
    sentences: Sequence[str],
    path: Optional[str],
    compute: Callable[[Teacher, Sequence[str]], np.ndarray] = embed_corpus,
) -> tuple[np.ndarray, bool]:
    """(embeddings [N, D], read_from_cache). Written atomically: a reader sees all or nothing.

    In a multi-process run the processes agree first: the cache is read only when every host
    finds it (a per-host cache folder may exist on some hosts only), else all compute together,
    since `compute` is a collective.
    """
    embeddings = _read_cache(path, (len(sentences), teacher.width))
    if _everywhere(embeddings is not None):
        logger.info("teacher embeddings cache hit: %s", path)
        return embeddings, True
    embeddings = np.asarray(compute(teacher, sentences), np.float32)
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_file(path) as handle:
            np.save(handle, embeddings)
        logger.info("teacher embeddings of %d sentences -> %s", len(sentences), path)
    return embeddings, False
