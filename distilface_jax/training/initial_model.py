"""The model a new run starts from: encoder config (with the run's dropout), initial params and
tokenizer, from a HF checkpoint or the generated `builtin:tiny` demo model.

(A trained run's model is read back from its workdir by `distilface_jax.trained_model`.)
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax

from distilface_jax.config.base import BUILTIN_TINY
from distilface_jax.config.keys import Config
from distilface_jax.interop import hf, st_folder
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import init_params
from distilface_jax.training import tiny_data

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class InitialModel:
    encoder_config: EncoderConfig  # with the run's dropout
    params: Any
    tokenizer: Any
    checkpoint_has_mlp: bool  # the checkpoint carries an MLP head (BERT pooler, sentence-transformers Dense)


def initial_model(config: Config, workdir: str) -> InitialModel:
    """The model a new run starts from. `config.model.mlp_init` picks the MLP head: "random"
    (SimCSE's fresh N(0, 0.02) head, seeded by `config.seed`) or "pretrained" (the checkpoint's
    pooler / Dense head; an error for a checkpoint without one)."""
    model_config = config.model
    if model_config.mlp_init not in hf.MLP_INITS:
        raise ValueError(f"config.model.mlp_init must be one of {hf.MLP_INITS}, got {model_config.mlp_init!r}")
    tie_decoder = bool(config.loss.mlm_tie_decoder)
    if model_config.name_or_path == BUILTIN_TINY:
        tokenizer = tiny_data.load_tiny_tokenizer(tiny_data.prepare_builtin_tiny(workdir)["vocab"])
        shape = model_config.tiny
        encoder_config = EncoderConfig(
            model_type="distilbert",
            vocab_size=len(tokenizer),
            hidden_size=shape.hidden_size,
            num_layers=shape.num_layers,
            num_heads=shape.num_heads,
            intermediate_size=shape.intermediate_size,
            max_position_embeddings=shape.max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id,
        )
        params = jax.device_get(
            init_params(
                encoder_config,
                jax.random.key(config.seed),
                with_mlm_head=config.loss.do_mlm,
                tie_mlm_decoder=tie_decoder,
            )
        )
        has_mlp = False
    else:
        loaded = hf.load_pretrained(
            model_config.name_or_path,
            with_mlm_head=config.loss.do_mlm,
            seed=config.seed,
            mlp_init=model_config.mlp_init,
            tie_mlm_decoder=tie_decoder,
        )
        encoder_config, params, tokenizer, has_mlp = loaded.config, loaded.params, loaded.tokenizer, loaded.found_mlp
        warn_pooler_mismatch(Path(loaded.source), model_config.pooler)
    if model_config.mlp_init == "pretrained" and not has_mlp:
        raise ValueError(
            f"config.model.mlp_init='pretrained', but {model_config.name_or_path} has no MLP head "
            "(no BERT pooler, no sentence-transformers Dense); use 'random'"
        )
    encoder_config = encoder_config.replace(
        hidden_dropout=model_config.dropout, attention_dropout=model_config.attention_dropout
    )
    return InitialModel(encoder_config, params, tokenizer, has_mlp)


def build_initial_model(config: Config, workdir: str) -> tuple[EncoderConfig, Any, Any]:
    """(encoder config with the run's dropout, initial params, tokenizer) for a new run."""
    model = initial_model(config, workdir)
    return model.encoder_config, model.params, model.tokenizer


def warn_pooler_mismatch(folder: Path, pooler: str) -> None:
    """Once per run start, on process 0: the model folder's own pooling differs from the config's
    (e.g. the unsup recipe's cls on all-MiniLM-L6-v2, made for mean pooling, loses ~4 STS points)."""
    message = st_folder.pooler_mismatch(folder, pooler)
    if message and jax.process_index() == 0:
        logger.warning(message)
