"""Unsupervised SimCSE, BERT-base (Gao et al. 2021: wiki1m, 1 epoch, batch 64, lr 3e-5, cls + MLP at train only).

    python -m distilface_jax.train --config configs/unsup_bert.py --workdir runs/unsup_bert

Target (STS avg, Spearman x 100, test): 76.25.
"""

from distilface_jax.config.base import unsup_recipe


def get_config():
    return unsup_recipe("bert-base-uncased")
