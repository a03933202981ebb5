"""Supervised SimCSE on DistilBERT (NLI with hard negatives, 3 epochs, batch 512, lr 5e-5, cls pooler with MLP).

    python -m distilface_jax.train --config configs/sup_distilbert.py --workdir runs/sup_distilbert \
        --config.data.train_file=data/nli_for_simcse.csv
"""

from distilface_jax.config_base import base_config


def get_config():
    config = base_config()
    config.model.name_or_path = "distilbert-base-uncased"
    config.batch_size = 512
    config.learning_rate = 5e-5
    config.num_epochs = 3
    config.data.format = "sup"
    config.data.train_file = "data/nli_for_simcse.csv"
    config.data.max_seq_length = 32
    config.model.pooler = "cls"
    config.model.mlp_only_train = False
    config.loss.hard_negative_weight = 0.0
    config.eval_every = 125
    return config
