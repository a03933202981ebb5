"""Offline demo: a tiny random DistilBERT-shaped model on a generated corpus; no network, ~1 min on 2 CPUs.

    python -m distilface_jax.train --config configs/tiny.py --workdir runs/tiny

Runs the whole pipeline: train -> STS-B dev eval -> checkpoint -> final 7-task STS eval on a
generated SentEval-format fixture. The model, corpus, vocabulary and fixture are all
generated into WORKDIR/builtin by `distilface_jax.training.tiny_data`.
"""

from distilface_jax.config.base import BUILTIN_TINY, base_config


def get_config():
    config = base_config()
    config.model.name_or_path = BUILTIN_TINY
    config.model.dtype = "float32"
    # A random tiny model collapses under the CLS pooler (every sentence the same vector);
    # mean pooling gives it the words, and it learns. Real recipes keep SimCSE's cls.
    config.model.pooler = "avg"
    config.data.train_file = BUILTIN_TINY
    config.eval.sts_dir = BUILTIN_TINY
    config.batch_size = 32
    config.learning_rate = 3e-4  # A random model learns faster than fine-tuning allows.
    config.max_steps = 120
    config.log_every = 20
    config.eval_every = 40
    config.checkpoint_every = 40
    config.data.max_seq_length = 32
    config.eval.batch_size = 64
    return config
