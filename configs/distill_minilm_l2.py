"""Distil all-MiniLM-L6-v2 into a 2-layer student, its layers [0, 5] (the smallest edge model).

    python -m distilface_jax.train --config configs/distill_minilm_l2.py --workdir runs/minilm_l2 \
        --config.distill.teacher=TEACHER_DIR \
        --config.data.train_file=configs/data/minilm_distill_2x.mixture.json \
        --config.eval.sts_dir=data/senteval
    python -m distilface_jax.export --workdir runs/minilm_l2 --step best --out runs/minilm_l2_student

The objective of configs/distill_minilm_l3.py (MSE + InfoNCE with a 16-batch queue + hidden-state
cosine + attention relations), with layers [0, 5] (the best pair on STS-B dev among all 15,
untrained: 80.20; docs/distillation.md) and twice the corpus: the same 21 sources with every cap
doubled (`configs/data/minilm_distill_2x.mixture.json`, 121,651 sentences), one epoch, 1,900 steps,
STS-B dev four times. On the 3-layer recipe's 66,618 sentences the 2-layer student was still
improving at the last step (docs/distillation.md); a student with a third less capacity needs
more of the corpus to reach the same share of its teacher.
"""

import importlib.util
import os


def _three_layer_recipe():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distill_minilm_l3.py")
    spec = importlib.util.spec_from_file_location("distill_minilm_l3", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    config = _three_layer_recipe()
    config.distill.student_layers = (0, 5)
    config.data.train_file = "configs/data/minilm_distill_2x.mixture.json"
    config.eval_every = 475  # STS-B dev four times in 1,900 steps, as the 3-layer recipe; the best step is exported.
    config.checkpoint_every = 475
    return config
