"""The distillation recipe (`DistillRecipe`, a `training.recipe.Recipe`): what the shared loop
needs from a distillation config: the student, the teacher's targets in the data, the step,
the dev-evaluation pipeline and the run's record (distill.json) for `evaluate/encode/export
--workdir`.

A config distils when it has a `distill` block with a teacher (`configs/distill_*.py`):
    distill.teacher            HF folder or hub id of the teacher (sentence-transformers or plain)
    distill.teacher_pooler     '' = the teacher folder's own Pooling; else a pooler name
    distill.teacher_normalize  None = the teacher folder's own (Normalize module); else True/False
    distill.teacher_max_length 0 = the teacher's own limit (cached) / data.max_seq_length (in step)
    distill.student_layers     [] = the student is config.model.name_or_path; else these teacher layers
    distill.teacher_in_step    False = teacher embeddings computed once and cached
    distill.contrastive_weight, distill.temperature   the optional InfoNCE term (objective.py)
    distill.queue_steps        K: InfoNCE also against the K previous batches' teacher embeddings
    distill.relational_weight, relational_temperature  in-batch similarity KL (relations.py)
    distill.hidden_weight, hidden_loss   cut student: layer i's output to its teacher layer's
    distill.attention_weight   cut student: MiniLM attention and value relations, last layer
    distill.keep_projection    when the widths differ: False = the student's own D_s-wide
                               embedding is evaluated and exported (the width map is a training
                               head); True = the map is part of the model (dev evaluation, encode,
                               export as a sentence-transformers Dense module), embeddings D_t wide
The student's pooler is `model.pooler`; it normalises exactly when the teacher does, so the
exported sentence-transformers folder has the teacher's pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from distilface_jax import run_folder, run_record
from distilface_jax.config import keys
from distilface_jax.config.base import (
    BUILTIN_TINY,
    distill_block,  # noqa: F401  (declared with every key; configs import it here)
)
from distilface_jax.config.keys import Config
from distilface_jax.distill import student as student_lib, teacher as teacher_lib
from distilface_jax.distill.queue import QueuedTeacherData
from distilface_jax.distill.step import (
    TEACHER_EMBEDDING,
    TEACHER_PREFIX,
    DistillSettings,
    make_distill_step,
)
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_pipeline import PROJECTION, SentencePipeline
from distilface_jax.training import data, initial_model, matryoshka, mixture, store_data, tiny_data
from distilface_jax.training.initial_model import InitialModel
from distilface_jax.training.recipe import Recipe, Step

logger = logging.getLogger(__name__)


def enabled(config: Config) -> bool:
    return keys.recipe_name(config) == "distill"


def keeps_projection(config: Config) -> bool:
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

    def attach_teacher(self, train_data: data.TrainData, config: Config, workdir: str) -> data.TrainData:
        """The training data with the teacher's targets as extra per-example arrays: its cached
        embeddings [N, D_t], or (teacher in the step) its own tokens of the same text [N, 1, L_t]."""
        if config.data.format != "unsup":
            raise ValueError("distillation reads one sentence per line: config.data.format must be 'unsup'")
        if isinstance(train_data, store_data.StoreData):
            raise ValueError("distillation reads its corpus in memory: it does not run from the token store yet")
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
        attached = dataclasses.replace(train_data, arrays={**train_data.arrays, **extra})
        if config.distill.queue_steps:
            return QueuedTeacherData.wrap(attached, config.distill.queue_steps)
        return attached

    def make_step(self, config: Config, mesh, optimizer, schedule, state_sharding):
        dtype, attention_impl = jnp.dtype(config.model.dtype), config.model.attention_impl
        model = self.settings.student.module(dtype, attention_impl)
        teacher_model = teacher_params = None
        if config.distill.teacher_in_step or self.settings.needs_teacher_features:
            teacher_model = self.settings.teacher.module(dtype, attention_impl)
            teacher_params = self.teacher.params
        return make_distill_step(
            model, optimizer, schedule, mesh, self.settings, state_sharding, teacher_model, teacher_params
        )

    def record(self, keep_projection: bool) -> dict:
        """WORKDIR/distill.json: what evaluate/encode/export need beyond the SimCSE run files."""
        projection = self.student_params.get(PROJECTION)
        return run_record.distill_record(
            teacher=self.teacher.source,
            teacher_pooler=self.teacher.pipeline.pooler,
            normalize=self.settings.student.normalize,
            projection=None if projection is None else tuple(int(n) for n in np.shape(projection["kernel"])),
            keep_projection=keep_projection,
            max_length=self.teacher.pipeline.max_length,
        )


def _read_corpus(train_file: str):
    """(source, sentences) exactly as `data.load_unsupervised` reads them (blank lines skipped;
    a mixture by its rules: its name and fingerprint then key the teacher cache)."""
    return data.read_sentences(train_file)


def check_corpus(config: Config) -> None:
    """An empty corpus is one clear error, before any model is loaded (and before anything is
    written: the generated `builtin:tiny` corpus, never empty, is not generated for this)."""
    train_file = config.data.train_file
    if train_file == BUILTIN_TINY:
        return
    if mixture.is_mixture(train_file):  # Parsed and read: every bad spec or empty source named.
        mixture.read(mixture.parse(train_file))
        return
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


def prepare(config: Config, workdir: str) -> Distiller:
    """Teacher and student of a distillation config, both checked; errors name the setting.
    Writes nothing: a refused run must leave the workdir as it was."""
    distill = config.distill
    check_corpus(config)
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
    # The student as trained: pooled as configured, its MLP head as at evaluation, the width
    # map when the widths differ, normalised exactly when the teacher is.
    student = SentencePipeline(
        student_config,
        tokenizer,
        pooler=config.model.pooler,
        apply_mlp=run_record.eval_pooling(config.model)[1],
        width_map=teacher.width if PROJECTION in params else None,
        normalize=teacher.pipeline.normalize,
    )
    settings = DistillSettings(
        student=student,
        teacher=teacher.pipeline,
        temperature=distill.temperature,
        contrastive_weight=distill.contrastive_weight,
        matryoshka_dims=tuple(config.loss.get("matryoshka_dims") or ()),
        matryoshka_weights=tuple(config.loss.get("matryoshka_weights") or ()),
        relational_weight=distill.relational_weight,
        relational_temperature=distill.relational_temperature,
        hidden_weight=distill.hidden_weight,
        hidden_loss=distill.hidden_loss,
        hidden_layers=tuple(distill.student_layers or ()),
        attention_weight=distill.attention_weight,
    )
    # A Matryoshka dimension wider than the embedding is named now, not when the step compiles.
    width = teacher.width if PROJECTION in params else student_config.hidden_size
    matryoshka.resolve(settings.matryoshka_dims, settings.matryoshka_weights, width)
    distiller = Distiller(teacher, settings, student_config, params, tokenizer)
    logger.info(
        "student: %d layers, %d parameters; teacher %s: %d layers, pooler %s%s",
        student_config.num_layers,
        student_lib.count_parameters(params),
        teacher.source,
        teacher.config.num_layers,
        teacher.pipeline.pooler,
        ", normalized" if teacher.pipeline.normalize else "",
    )
    return distiller


class DistillRecipe(Recipe):
    """Distillation as a recipe of the shared loop: the teacher and student are loaded when the
    loop asks for the initial model, and kept for the data, the step and the record."""

    name = "distill"

    def __init__(self):
        self.distiller: Optional[Distiller] = None

    def initial_model(self, config: Config, workdir: str) -> InitialModel:
        self.distiller = prepare(config, workdir)
        return InitialModel(*self.distiller.student, checkpoint_has_mlp=False)

    def records(self, config: Config) -> dict[str, dict]:
        return {run_folder.DISTILL_FILE: self.distiller.record(keeps_projection(config))}

    def attach(self, train_data: data.TrainData, config: Config, workdir: str) -> data.TrainData:
        return self.distiller.attach_teacher(train_data, config, workdir)

    def eval_pipeline(self, config: Config, model: InitialModel) -> SentencePipeline:
        record = self.distiller.record(keeps_projection(config))
        return run_record.pipeline_of(config.model, model.encoder_config, model.tokenizer, record)

    def make_step(
        self, config: Config, model: InitialModel, train_data: data.TrainData, mesh, optimizer, schedule, state_sharding
    ) -> Step:
        return self.distiller.make_step(config, mesh, optimizer, schedule, state_sharding)
