"""The SimCSE recipe (Gao et al. 2021): contrastive learning of a sentence encoder, its two
views made by dropout (unsup) or taken from NLI pairs with hard negatives (sup).

Starts from a HF checkpoint or the tiny demo model (`initial_model`), trains the InfoNCE
objective of the global batch (`objective.py`; GradCache when `grad_cache_chunk_size` > 0,
SimCSE's auxiliary MLM with `loss.do_mlm`), and evaluates with the run's pooler, its MLP
head dropped when it is train-only (`mlp_only_train`).
"""

from __future__ import annotations

import jax.numpy as jnp

from distilface_jax import run_record
from distilface_jax.config.keys import Config
from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.training import initial_model, matryoshka
from distilface_jax.training.data import TrainData
from distilface_jax.training.grad_cache import make_grad_cache_fn
from distilface_jax.training.initial_model import InitialModel
from distilface_jax.training.objective import LossConfig, MlmVocabulary
from distilface_jax.training.recipe import Recipe, Step
from distilface_jax.training.step import make_train_step


class SimCSE(Recipe):
    name = "simcse"

    def initial_model(self, config: Config, workdir: str) -> InitialModel:
        return initial_model.initial_model(config, workdir)

    def eval_pipeline(self, config: Config, model: InitialModel) -> SentencePipeline:
        return run_record.pipeline_of(config.model, model.encoder_config, model.tokenizer)

    def make_step(
        self, config: Config, model: InitialModel, train_data: TrainData, mesh, optimizer, schedule, state_sharding
    ) -> Step:
        return build_step(
            config,
            model.encoder_config,
            model.tokenizer,
            mesh,
            optimizer,
            schedule,
            max(2, train_data.num_views),
            state_sharding,
        )


def build_step(config: Config, encoder_config, tokenizer, mesh, optimizer, schedule, num_views: int, state_sharding):
    """The jitted step for this config (with GradCache when `grad_cache_chunk_size` > 0)."""
    model = SentenceEncoder(
        encoder_config,
        pooler=config.model.pooler,
        dtype=jnp.dtype(config.model.dtype),
        attention_impl=config.model.attention_impl,
        with_mlm_head=config.loss.do_mlm,
        tie_mlm_decoder=config.loss.mlm_tie_decoder,
    )
    loss_config = LossConfig(
        temperature=config.loss.temperature,
        hard_negative_weight=config.loss.hard_negative_weight,
        do_mlm=config.loss.do_mlm,
        mlm_weight=config.loss.mlm_weight,
        mlm_probability=config.loss.mlm_probability,
        matryoshka_dims=tuple(config.loss.get("matryoshka_dims") or ()),
        matryoshka_weights=tuple(config.loss.get("matryoshka_weights") or ()),
    )
    # A Matryoshka dimension wider than the embedding is named now, not when the step compiles.
    matryoshka.resolve(loss_config.matryoshka_dims, loss_config.matryoshka_weights, encoder_config.hidden_size)
    vocabulary = MlmVocabulary.of(tokenizer, encoder_config.vocab_size) if config.loss.do_mlm else None
    gradient_fn = None
    if config.grad_cache_chunk_size:
        gradient_fn = make_grad_cache_fn(model, mesh, num_views, loss_config, config.grad_cache_chunk_size)
    return make_train_step(
        model, optimizer, schedule, mesh, num_views, loss_config, state_sharding, gradient_fn, mlm_vocabulary=vocabulary
    )
