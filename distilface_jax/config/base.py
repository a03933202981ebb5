"""The base recipe every config file in `configs/` starts from (SimCSE's defaults), built from
the key declarations (`keys.py`: each key's default, meaning and check, declared once).

Config files override a handful of fields; every field can also be overridden on the
command line (`--config.learning_rate=5e-5`). Unknown keys are errors: the config is locked.
"""

from __future__ import annotations

from distilface_jax.config import keys
from distilface_jax.config.keys import Config

BUILTIN_TINY = "builtin:tiny"  # The offline demo's generated model, corpus and STS fixture.


def base_config() -> Config:
    """Every key (`keys.KEYS`) at its declared default."""
    return keys.build(keys.KEYS)


def distill_block() -> Config:
    """The `config.distill` defaults (`keys.DISTILL_KEYS`), added by distillation configs only, so
    SimCSE configs and their workdirs are unchanged."""
    return keys.build(keys.DISTILL_KEYS, prefix="distill.")


def unsup_recipe(name_or_path: str) -> Config:
    """Unsupervised SimCSE (Gao et al. 2021, Table A.1): wiki1m, 1 epoch, batch 64, lr 3e-5,
    max length 32, τ 0.05, cls pooler with a fresh MLP head, applied at training only."""
    config = base_config()
    config.model.name_or_path = name_or_path
    config.batch_size = 64
    config.learning_rate = 3e-5
    config.num_epochs = 1
    config.data.format = "unsup"
    config.data.train_file = "data/wiki1m_for_simcse.txt"
    config.data.max_seq_length = 32
    config.model.pooler = "cls"
    config.model.mlp_only_train = True
    config.model.mlp_init = "random"  # SimCSE builds its MLP head fresh; BERT's pooler is not read.
    config.eval_every = 125
    return config


def sup_recipe(name_or_path: str) -> Config:
    """Supervised SimCSE: NLI (sent0, sent1, hard_neg), 3 epochs, batch 512, lr 5e-5, cls pooler
    with the MLP head kept, hard-negative weight 0."""
    config = unsup_recipe(name_or_path)
    config.batch_size = 512
    config.learning_rate = 5e-5
    config.num_epochs = 3
    config.data.format = "sup"
    config.data.train_file = "data/nli_for_simcse.csv"
    config.model.mlp_only_train = False
    config.loss.hard_negative_weight = 0.0
    return config
