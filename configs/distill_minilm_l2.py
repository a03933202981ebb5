"""Distil all-MiniLM-L6-v2 into a 2-layer student, its layers [0, 5] (the smallest edge model).

    python -m distilface_jax.train --config configs/distill_minilm_l2.py --workdir runs/minilm_l2 \
        --config.distill.teacher=TEACHER_DIR \
        --config.data.train_file=configs/data/minilm_distill.mixture.json \
        --config.eval.sts_dir=data/senteval
    python -m distilface_jax.export --workdir runs/minilm_l2 --step best --out runs/minilm_l2_student

Everything as configs/distill_minilm_l3.py (the same data, objective and steps) but the layers:
[0, 5] is the best pair on STS-B dev among all 15, untrained (80.20; docs/distillation.md).
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
    return config
