"""Supervised SimCSE, BERT-base (NLI with hard negatives, 3 epochs, batch 512, lr 5e-5, cls pooler with MLP).

    python -m distilface_jax.train --config configs/sup_bert.py --workdir runs/sup_bert \
        --config.data.train_file=data/nli_for_simcse.csv

Target (STS avg, Spearman x 100, test): 81.57.
"""

from distilface_jax.config.base import sup_recipe


def get_config():
    return sup_recipe("bert-base-uncased")
