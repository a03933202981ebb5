"""Supervised SimCSE on DistilBERT (NLI with hard negatives, 3 epochs, batch 512, lr 5e-5, cls pooler with MLP).

    python -m distilface_jax.train --config configs/sup_distilbert.py --workdir runs/sup_distilbert \
        --config.data.train_file=data/nli_for_simcse.csv
"""

from distilface_jax.config.base import sup_recipe


def get_config():
    return sup_recipe("distilbert-base-uncased")
