"""DistilFace: unsupervised SimCSE on DistilBERT (wiki1m, 1 epoch, batch 64, lr 3e-5).

    python -m distilface_jax.train --config configs/unsup_distilbert.py --workdir runs/unsup_distilbert \
        --config.data.train_file=data/wiki1m_for_simcse.txt --config.eval.sts_dir=SentEval/data/downstream

Target (STS avg, Spearman x 100, test): 72.1 (DistilFace).
"""

from distilface_jax.config.base import unsup_recipe


def get_config():
    return unsup_recipe("distilbert-base-uncased")
