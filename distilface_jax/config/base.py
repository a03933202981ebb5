"""The base recipe every config file in `configs/` starts from (SimCSE's defaults).

Config files override a handful of fields; every field can also be overridden on the
command line (`--config.learning_rate=5e-5`). Unknown keys are errors: the config is locked.
"""

from __future__ import annotations

import ml_collections

BUILTIN_TINY = "builtin:tiny"  # The offline demo's generated model, corpus and STS fixture.


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 64  # Global: over all devices of all hosts.
    config.num_epochs = 1
    config.max_steps = 0  # > 0 overrides num_epochs.
    config.learning_rate = 3e-5
    config.warmup_steps = 0
    config.weight_decay = 0.0
    config.adam_b1 = 0.9
    config.adam_b2 = 0.999
    config.adam_eps = 1e-8
    config.max_grad_norm = 1.0
    config.log_every = 50
    config.eval_every = 125  # 0 = no evaluation during training.
    config.checkpoint_every = 250
    config.keep_checkpoints = 2
    config.grad_cache_chunk_size = 0  # Examples per chunk per device; 0 = off.
    config.extend = False  # True: continue a finished run to a higher max_steps/num_epochs.
    config.profile_steps = ""  # "START:STOP": jax.profiler trace of those steps in WORKDIR/profile.

    config.model = ml_collections.ConfigDict()
    config.model.name_or_path = "distilbert-base-uncased"
    config.model.pooler = "cls"
    config.model.mlp_only_train = True  # Unsup SimCSE: the MLP head is dropped at evaluation.
    # "random": a fresh N(0, 0.02) head, bias 0, from `seed`, as SimCSE's BertForCL (whose BERT has
    # no pooler). "pretrained": the checkpoint's BERT pooler / sentence-transformers Dense head,
    # e.g. to continue a released SimCSE model.
    config.model.mlp_init = "random"
    config.model.dropout = 0.1
    config.model.attention_dropout = 0.1
    config.model.dtype = "float32"  # Compute dtype; parameters stay float32. "bfloat16" on TPU/GPU.
    config.model.attention_impl = "xla"  # or "dot_product_attention" (fused kernel when dropout is off)
    # Only for model.name_or_path == "builtin:tiny": the random model's shape.
    config.model.tiny = ml_collections.ConfigDict(
        dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=64)
    )

    config.loss = ml_collections.ConfigDict()
    config.loss.temperature = 0.05
    config.loss.hard_negative_weight = 0.0
    config.loss.do_mlm = False
    config.loss.mlm_weight = 0.1
    config.loss.mlm_probability = 0.15
    # False: the MLM decoder is a matrix of its own, as SimCSE's BertForCL; True: tied to the word
    # embeddings (what runs made before this key did; kept so they resume).
    config.loss.mlm_tie_decoder = False

    config.data = ml_collections.ConfigDict()
    config.data.train_file = "data/wiki1m_for_simcse.txt"
    config.data.format = "unsup"  # "unsup": one sentence per line; "sup": csv sent0,sent1[,hard_neg]
    config.data.max_seq_length = 32
    config.data.cache_dir = ""  # Default: tokens in WORKDIR/cache, teacher embeddings in ~/.cache/distilface_jax.

    config.eval = ml_collections.ConfigDict()
    config.eval.sts_dir = "SentEval/data/downstream"  # Holds STS/ and SICK/ (launch/download_senteval_sts.sh).
    config.eval.batch_size = 128
    config.eval.final_test = True  # Full 7-task STS test of the best checkpoint at the end.
    return config


def unsup_recipe(name_or_path: str) -> ml_collections.ConfigDict:
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


def sup_recipe(name_or_path: str) -> ml_collections.ConfigDict:
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
