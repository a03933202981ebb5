"""The recipe interface: what a training recipe hands the loop (`trainer.train_and_evaluate`).

The loop owns what every recipe shares: the mesh, the optimizer and schedule, the sharded
state, checkpoints and resume, metrics, dev evaluation and the final test, the run's record.
A recipe supplies the rest, called in this order:
    initial_model   the model a new run starts from (params, encoder config, tokenizer)
    records         its own files of the run's record ({file name: JSON}; `run_record`)
    attach          the training data with its extra per-example arrays (e.g. teacher targets)
    eval_pipeline   what dev evaluation embeds with: the pipeline the run's record reads back
    make_step       the jitted `step(state, batch) -> (state, metrics)`: its objective and gradient
SimCSE (`training/simcse.py`) and distillation (`distill/run.py`) are the two; `train.py`
chooses one from the config (`config.keys.recipe_name`). The loop imports no recipe but the
default, SimCSE: recipes depend on `training/`, never the reverse.
"""

from __future__ import annotations

import abc
from typing import Callable

from distilface_jax.config.keys import Config
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.training.data import TrainData
from distilface_jax.training.initial_model import InitialModel

Step = Callable  # jitted `step(state, batch) -> (state, metrics)`, the state donated


class Recipe(abc.ABC):
    name: str = ""  # as `config.keys.recipe_name` names it

    @abc.abstractmethod
    def initial_model(self, config: Config, workdir: str) -> InitialModel:
        """The model a new run starts from, its encoder config carrying the run's dropout (also
        built on resume: the checkpoint then replaces the params)."""

    def records(self, config: Config) -> dict[str, dict]:
        """The recipe's own files of the run's record, written by the loop on process 0 at every
        start ({file name: JSON object}); none by default."""
        return {}

    def attach(self, train_data: TrainData, config: Config, workdir: str) -> TrainData:
        """The training data with the recipe's extra per-example arrays; none by default."""
        return train_data

    @abc.abstractmethod
    def eval_pipeline(self, config: Config, model: InitialModel) -> SentencePipeline:
        """What dev evaluation and the final test embed with: the pipeline that `trained_model`
        reads back from the run's record, so the scores are those of the exported model."""

    @abc.abstractmethod
    def make_step(
        self,
        config: Config,
        model: InitialModel,
        train_data: TrainData,
        mesh,
        optimizer,
        schedule,
        state_sharding,
    ) -> Step:
        """The jitted training step of this recipe's objective over the global batch."""
