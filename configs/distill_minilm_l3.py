"""Distil all-MiniLM-L6-v2 into a 3-layer student cut from its own layers (edge model; ~25 min on 2 CPUs).

    python -m distilface_jax.train --config configs/distill_minilm_l3.py --workdir runs/minilm_l3 \
        --config.distill.teacher=TEACHER_DIR \
        --config.data.train_file=configs/data/minilm_distill.mixture.json \
        --config.eval.sts_dir=data/senteval
    python -m distilface_jax.export --workdir runs/minilm_l3 --step best --out runs/minilm_l3_student

Data: a mixture of 66,618 unlabeled sentences from 21 public sources (the wiki1m head, captions,
headlines and news, questions and queries, Tatoeba, general prose, reviews, simplified
Wikipedia, RTE and MRPC sentences; `configs/data/minilm_distill.mixture.json`, paths under
`data/`), never an STS or SICK evaluation sentence; one epoch, 1,040 steps (docs/distillation.md:
the ablation, and why data beat the extra objectives here).
Objective: MSE to the teacher's normalised mean-pooled embeddings (Reimers & Gurevych 2020)
+ 0.01 x InfoNCE (student vs every teacher embedding of the global batch and of a 16-batch queue,
tau 0.05) + 0.01 x hidden-state cosine (each layer to its source teacher layer, as DistilBERT)
+ 0.003 x MiniLM's last-layer attention and value relations.
Layers [0, 3, 5] were chosen on STS-B dev among all 20 three-layer subsets, untrained
(benchmarks/choose_student_layers.py; docs/distillation.md). The 2-layer student:
configs/distill_minilm_l2.py.
"""

from distilface_jax.config.base import base_config
from distilface_jax.distill.run import distill_block


def get_config():
    config = base_config()
    config.distill = distill_block()
    config.distill.teacher = "sentence-transformers/all-MiniLM-L6-v2"  # hub id; or a local folder
    config.distill.student_layers = (0, 3, 5)
    config.model.name_or_path = ""  # unused: the student is cut from the teacher
    config.model.pooler = "avg"  # the teacher's own pooling (its 1_Pooling: mean)
    # No dropout: the target is a deterministic teacher; fitting it exactly beats regularising here
    # (docs/distillation.md: recipe B over A, STS avg 76.57 vs 76.40 after 2 epochs).
    config.model.dropout = 0.0
    config.model.attention_dropout = 0.0
    # + w·InfoNCE of each student embedding against all teacher embeddings of the global batch,
    # and of the 16 batches before it (the queue: 1,088 candidates).
    config.distill.contrastive_weight = 0.01
    config.distill.temperature = 0.05
    config.distill.queue_steps = 16
    # + each student layer's output against its source teacher layer's (DistilBERT's cosine), and
    # the last layer's attention and value relations (MiniLM). Weights: each term equal to the MSE
    # term at the first step. Both run the teacher in the step on the student's rows (1.4x time).
    config.distill.hidden_weight = 0.01
    config.distill.attention_weight = 0.003
    config.data.format = "unsup"
    # A mixture spec (docs/data.md); a plain text file, a comma list or a glob work as well.
    config.data.train_file = "configs/data/minilm_distill.mixture.json"
    # 64, not SimCSE's 32: the teacher's targets embed whole lines (its limit is 256) and a quarter
    # of the wiki lines are longer than 32 tokens; a student cut at 32 fits the wrong target.
    config.data.max_seq_length = 64
    config.batch_size = 64
    config.learning_rate = 2e-4  # Recipe C in docs/distillation.md (1e-4 with length 32: 76.39 at best on dev).
    config.num_epochs = 1  # One pass over 66,618 sentences: 1,040 steps.
    config.log_every = 52
    config.eval_every = 260  # STS-B dev four times; the best step is exported.
    config.checkpoint_every = 260
    config.keep_checkpoints = 2
    return config
