"""DistilFace: unsupervised SimCSE on DistilBERT (wiki1m, 1 epoch, batch 64, lr 3e-5).

    python -m distilface_jax.train --config configs/unsup_distilbert.py --workdir runs/unsup_distilbert \
        --config.data.train_file=data/wiki1m_for_simcse.txt --config.eval.sts_dir=SentEval/data/downstream

Target (STS avg, Spearman x 100, test): 72.1 (DistilFace).
"""

from distilface_jax.config_base import base_config


def get_config():
    config = base_config()
    config.model.name_or_path = "distilbert-base-uncased"
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
