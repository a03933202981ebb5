"""What the trainer needs from a distillation config: the student, the teacher's targets in the
data, the step, and the run's description for `evaluate/encode/export --workdir`.

A config distils when it has a `distill` block with a teacher (`configs/distill_*.py`):
    distill.teacher            HF folder or hub id of the teacher (sentence-transformers or plain)
    distill.teacher_pooler     '' = the teacher folder's own Pooling; else a pooler name
    distill.teacher_normalize  None = the teacher folder's own (Normalize module); else True/False
    distill.teacher_max_length 0 = the teacher's own limit (cached) / data.max_seq_length (in step)
    distill.student_layers     [] = the student is config.model.name_or_path; else these teacher layers
    distill.teacher_in_step    False = teacher embeddings computed once and cached
    distill.contrastive_weight, distill.temperature   the optional InfoNCE term (objective.py)
    distill.keep_projection    when the widths differ: False = the student's own D_s-wide
                               embedding is evaluated and exported (the width map is a training
                               head); True = the map is part of the model (dev evaluation, encode,
                               export as a sentence-transformers Dense module), embeddings D_t wide
The student's pooler is `model.pooler`; it normalises exactly when the teacher does, so the
exported sentence-transformers folder has the teacher's pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distilface_jax import (
    run_folder,
    trained_model,
)
from distilface_jax.distill import student as student_lib, teacher as teacher_lib
from distilface_jax.distill.step import (
    PROJECTION,
    TEACHER_EMBEDDING,
    TEACHER_PREFIX,
    DistillSettings,
    make_distill_step,
)
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.training import data, initial_model, tiny_data

logger = logging.getLogger(__name__)


def distill_block() -> ml_collections.ConfigDict:
    """The `config.distill` defaults (added by distillation configs only, so SimCSE configs and
    their workdirs are unchanged)."""
    block = ml_collections.ConfigDict()
    block.teacher = "sentence-transformers/all-MiniLM-L6-v2"
    block.teacher_pooler = ""
    block.teacher_normalize = ml_collections.config_dict.placeholder(bool)
    block.teacher_max_length = 0
    block.student_layers = ml_collections.config_dict.placeholder(tuple)
    block.teacher_in_step = False
    block.contrastive_weight = 0.0
    block.temperature = 0.05
    block.teacher_batch_size = 128  # per device
    block.keep_projection = False
    return block


def enabled(config) -> bool:
    return "distill" in config and bool(config.distill.teacher)


def keeps_projection(config) -> bool:
    """True when a width map D_s → D_t is part of the trained model (evaluated and exported)."""
    return enabled(config) and bool(config.distill.get("keep_projection", False))


@dataclasses.dataclass
class Distiller:
    teacher: teacher_lib.Teacher
    settings: DistillSettings
    student_config: EncoderConfig
    student_params: dict
    student_tokenizer: Any

    @property
    def student(self) -> tuple[EncoderConfig, dict, Any]:
        return self.student_config, self.student_params, self.student_tokenizer

    def attach_teacher(self, train_data: data.TrainData, config, workdir: str) -> data.TrainData:
        """The training data with the teacher's targets as extra per-example arrays: its cached
        embeddings [N, D_t], or (teacher in the step) its own tokens of the same text [N, 1, L_t]."""
        if config.data.format != "unsup":
            raise ValueError("distillation reads one sentence per line: config.data.format must be 'unsup'")
        train_file = tiny_data.resolve_builtin(config.data.train_file, workdir, "corpus")
        source, sentences = _read_corpus(train_file)  # The rows TrainData holds, in its order.
        if len(sentences) != train_data.num_examples:
            raise RuntimeError(
                f"{train_file}: read {len(sentences)} sentences, the token data has {train_data.num_examples}"
            )
        if config.distill.teacher_in_step:
            length = config.distill.teacher_max_length or config.data.max_seq_length
            tokens = data.tokenize_views([sentences], self.teacher.tokenizer, length)
            extra = {TEACHER_PREFIX + name: array for name, array in tokens.items()}
        else:
            # One file per (teacher, corpus) key in a cache folder shared by every run of this user;
            # a workdir of earlier code kept it in WORKDIR/cache, where it is still read.
            key = (source.name, source.fingerprint(), self.teacher, len(sentences))
            path = teacher_lib.cache_path(teacher_lib.cache_folder(config.data.cache_dir), *key)
            legacy = run_folder.default_cache_dir(workdir)
            embeddings, hit = teacher_lib.cached_embeddings(
                self.teacher,
                sentences,
                path,
                compute=lambda t, s: teacher_lib.embed_corpus(t, s, config.distill.teacher_batch_size),
                also_read=[teacher_lib.cache_path(legacy, *key)] if legacy else [],
            )
            extra = {TEACHER_EMBEDDING: embeddings}
        return dataclasses.replace(train_data, arrays={**train_data.arrays, **extra})

    def make_step(self, config, mesh, optimizer, schedule, state_sharding):
        model = SentenceEncoder(
            self.student_config,
            pooler=config.model.pooler,
            dtype=jnp.dtype(config.model.dtype),
            attention_impl=config.model.attention_impl,
        )
        teacher_model = teacher_params = None
        if config.distill.teacher_in_step:
            teacher_model = SentenceEncoder(
                self.teacher.config,
                pooler=self.teacher.pooler,
                dtype=jnp.dtype(config.model.dtype),
                attention_impl=config.model.attention_impl,
            )
            teacher_params = self.teacher.params
        return make_distill_step(
            model, optimizer, schedule, mesh, self.settings, state_sharding, teacher_model, teacher_params
        )

    def describe(self, workdir: str, keep_projection: bool) -> None:
        """WORKDIR/distill.json: what evaluate/encode/export need beyond the SimCSE run files
        (written by the trainer once the run is known to go ahead)."""
        has_projection = PROJECTION in self.student_params
        description = {
            "teacher": self.teacher.source,
            "teacher_pooler": self.teacher.pooler,
            "normalize": self.settings.normalize,
            "projection": (list(np.shape(self.student_params[PROJECTION]["kernel"])) if has_projection else None),
            "keep_projection": bool(keep_projection and has_projection),
            "max_length": self.teacher.max_length,
        }
        run_folder.write_text(run_folder.path(workdir, run_folder.DISTILL_FILE), json.dumps(description, indent=2))


def _read_corpus(train_file: str):
    """(source, sentences) exactly as `data.load_unsupervised` reads them (blank lines skipped)."""
    source = data._resolve(train_file)
    views, _ = data._read_unsupervised(source, None)
    return source, views[0]


def check_corpus(config, workdir: str) -> None:
    """An empty corpus is one clear error, before any model is loaded."""
    train_file = tiny_data.resolve_builtin(config.data.train_file, workdir, "corpus")
    path = os.path.expanduser(train_file)
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            if not any(line.strip() for line in handle):
                what = "is empty" if os.path.getsize(path) == 0 else "holds only blank lines"
                raise ValueError(f"config.data.train_file {train_file}: the corpus is empty (the file {what})")


def _projection(student_width: int, teacher_width: int, seed: int) -> dict:
    """A learned linear map D_s → D_t for the loss, initialised like a Dense layer (lecun normal)."""
    kernel = jax.nn.initializers.lecun_normal()(jax.random.key(seed + 1), (student_width, teacher_width), jnp.float32)
    return {"kernel": np.asarray(kernel), "bias": np.zeros((teacher_width,), np.float32)}


def prepare(config, workdir: str) -> Distiller:
    """Teacher and student of a distillation config, both checked; errors name the setting.
    Writes nothing: a refused run must leave the workdir as it was."""
    distill = config.distill
    check_corpus(config, workdir)
    teacher = teacher_lib.load_teacher(
        distill.teacher,
        pooler=distill.teacher_pooler,
        normalize=distill.teacher_normalize,
        max_length=distill.teacher_max_length,
    )
    if distill.student_layers:
        student_config, params = student_lib.cut_layers(
            teacher.config, teacher.params, distill.student_layers, f"{distill.teacher}"
        )
        tokenizer = teacher.tokenizer
    else:
        from distilface_jax.interop import hf

        try:
            student_config, params, tokenizer = initial_model.build_initial_model(config, workdir)
        except hf.ModelLoadError as error:
            raise hf.ModelLoadError(f"student: {error}") from error
        student_lib.check_vocabulary(student_config, tokenizer, f"student {config.model.name_or_path}")
    student_config = student_config.replace(
        hidden_dropout=config.model.dropout, attention_dropout=config.model.attention_dropout
    )
    params = dict(params)
    if student_config.hidden_size != teacher.width:
        params[PROJECTION] = _projection(student_config.hidden_size, teacher.width, config.seed)
    settings = DistillSettings(
        apply_mlp=trained_model.eval_pooling(config.model)[1],
        normalize=teacher.normalize,
        teacher_normalize=teacher.normalize,
        teacher_apply_mlp=teacher.apply_mlp,
        temperature=distill.temperature,
        contrastive_weight=distill.contrastive_weight,
    )
    distiller = Distiller(teacher, settings, student_config, params, tokenizer)
    logger.info(
        "student: %d layers, %d parameters; teacher %s: %d layers, pooler %s%s",
        student_config.num_layers,
        student_lib.count_parameters(params),
        teacher.source,
        teacher.config.num_layers,
        teacher.pooler,
        ", normalized" if teacher.normalize else "",
    )
    return distiller


def read_description(workdir: str) -> Optional[dict]:
    path = run_folder.path(workdir, run_folder.DISTILL_FILE)
    return json.loads(path.read_text()) if path.exists() else None
