"""Unsupervised SimCSE, BERT-base (Gao et al. 2021: wiki1m, 1 epoch, batch 64, lr 3e-5, cls + MLP at train only).

    python -m distilface_jax.train --config configs/unsup_bert.py --workdir runs/unsup_bert

Target (STS avg, Spearman x 100, test): 76.25.
"""

from distilface_jax.config_base import base_config


def get_config():
    config = base_config()
    config.model.name_or_path = "bert-base-uncased"
    config.batch_size = 64
    config.learning_rate = 3e-5
    config.num_epochs = 1
    config.data.format = "unsup"
    config.data.train_file = "data/wiki1m_for_simcse.txt"
    config.data.max_seq_length = 32
    config.model.pooler = "cls"
    config.model.mlp_only_train = True
    config.eval_every = 125
    return config
