"""The run a user launches, against SimCSE written in PyTorch.

`python -m distilface_jax.train --config configs/sup_bert.py --config.X=...` is rebuilt here the
way the command line builds it (the config file parsed by `config_flags`, then `--config.*`
overrides), handed to `trainer.train_and_evaluate`, and compared step by step with a reference
that uses no project code: HF's `BertModel` loaded from the same folder, SimCSE's supervised loss
with a hard-negative weight, `torch.optim.AdamW` with HF Trainer's weight-decay groups,
`clip_grad_norm_`, and `LambdaLR` with the linear warm-up/decay of HF's
`get_linear_schedule_with_warmup`.

Every setting that changes the math is away from its default, and for each one the reference
rerun with that setting at its default must differ from the trainer by far more than the
tolerance: a trainer that ignored or hard-coded any of them would fail the comparison.
Data order is made irrelevant: the file is exactly one global batch, and the SimCSE loss of a
batch does not depend on the order of its rows. Dropout is off, so both sides are deterministic.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import ROOT, config_from_flags

BATCH = 8  # = rows of the file = one global batch, one example per simulated device
STEPS = 5
MAX_LENGTH = 16
ROWS = [  # sent0, sent1, hard_neg
    ("the cat sits on the red table .", "a cat sits on a table", "the dog runs in the park"),
    ("a man plays guitar", "the man plays music", "a woman eats food"),
    ("the small happy child reads a book", "a child reads", "the big sad man sleeps"),
    ("dogs run in the park", "the dog runs", "the cat sleeps under the tree"),
    ("the woman was happy", "a happy woman", "the woman was sad"),
    ("water is in the river", "the river has water", "the car is on the street"),
    ("the blue ball is under the table", "a ball under a table", "the green tree is big"),
    ("a child writes slowly", "the child writes", "a man runs quickly"),
]
# Every math-changing setting at a non-default value (the defaults are SimCSE's sup recipe, below).
SETTINGS = {
    "learning_rate": 2e-3,
    "warmup_steps": 2,
    "weight_decay": 0.3,
    "max_grad_norm": 0.05,
    "adam_b1": 0.8,
    "adam_b2": 0.95,
    "adam_eps": 1e-4,
    "loss.temperature": 0.1,
    "loss.hard_negative_weight": 0.7,
}
DEFAULTS = {
    "learning_rate": 5e-5,
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "adam_b1": 0.9,
    "adam_b2": 0.999,
    "adam_eps": 1e-8,
    "loss.temperature": 0.05,
    "loss.hard_negative_weight": 0.0,
}
LOSS_RTOL, PARAM_ATOL = 1e-5, 2e-6  # measured gaps: 4e-7 (relative), 2.4e-7 (absolute)


# ----------------------------------------------------------------------------- reference (no project code)


def reference_run(model_dir: Path, settings: dict) -> dict:
    """SimCSE's supervised training, as its HF Trainer runs it, in plain PyTorch + transformers."""
    import transformers

    model = transformers.BertModel.from_pretrained(str(model_dir)).eval()  # eval: dropout off
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    columns = [
        tokenizer(
            [row[k] for row in ROWS], padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
        )
        for k in range(3)
    ]
    temperature, weight = settings["loss.temperature"], settings["loss.hard_negative_weight"]

    def simcse_loss():  # SimCSE's cl_forward: cls pooler with the MLP head (= BERT's pooler here).
        z1, z2, z3 = (model(**column).pooler_output for column in columns)
        cosine = torch.nn.functional.cosine_similarity
        logits = torch.cat(
            [
                cosine(z1[:, None], z2[None], dim=-1) / temperature,
                cosine(z1[:, None], z3[None], dim=-1) / temperature + weight * torch.eye(BATCH),
            ],
            dim=1,
        )
        return torch.nn.functional.cross_entropy(logits, torch.arange(BATCH))

    named = list(model.named_parameters())
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm.weight" in n]  # HF Trainer's groups
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm.weight" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings["learning_rate"],
        betas=(settings["adam_b1"], settings["adam_b2"]),
        eps=settings["adam_eps"],
    )
    warmup = settings["warmup_steps"]

    def linear(step):  # transformers.get_linear_schedule_with_warmup
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (STEPS - step) / max(1, STEPS - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear)
    losses, learning_rates, gradient_norms = [], [], []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = simcse_loss()
        loss.backward()
        gradient_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), settings["max_grad_norm"])))
        losses.append(loss.item())
        learning_rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    return {
        "loss": np.array(losses),
        "learning_rate": np.array(learning_rates),
        "gradient_norm": np.array(gradient_norms),
        "params": {n: p.detach().numpy().copy() for n, p in named},
        "final_learning_rate": schedule.get_last_lr()[0],
    }


# ----------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def run(scaled_bert_dir, tmp_path_factory):
    from distilface_jax import trained_model
    from distilface_jax.interop import hf
    from distilface_jax.training import trainer
    from distilface_jax.training.metrics import read_metrics

    folder = tmp_path_factory.mktemp("trainer_reference")
    data_file = folder / "nli.csv"
    with data_file.open("w", newline="") as handle:
        csv.writer(handle).writerows([("sent0", "sent1", "hard_neg"), *ROWS])
    workdir = folder / "run"
    overrides = {
        **SETTINGS,
        "model.name_or_path": scaled_bert_dir,
        "model.mlp_init": "pretrained",
        "model.dropout": 0.0,
        "model.attention_dropout": 0.0,
        "data.train_file": data_file,
        "data.max_seq_length": MAX_LENGTH,
        "batch_size": BATCH,
        "max_steps": STEPS,
        "log_every": 1,
        "eval_every": 0,
        "eval.final_test": False,
        "checkpoint_every": STEPS,
    }
    config = config_from_flags(
        [
            f"--config={ROOT / 'configs' / 'sup_bert.py'}",
            *(f"--config.{key}={value}" for key, value in overrides.items()),
        ]
    )
    for key, value in SETTINGS.items():  # The overrides really arrived.
        node = config
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    outcome = trainer.train_and_evaluate(config, str(workdir))
    assert outcome.final_step == STEPS
    records = [r for r in read_metrics(str(workdir)) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    model = trained_model.load_run_model(str(workdir))
    params = hf.to_hf_state_dict(model.config, model.params)  # HF names: BertModel's state dict
    return {
        "loss": np.array([r["loss"] for r in records]),
        "learning_rate": np.array([r["learning_rate"] for r in records]),
        "gradient_norm": np.array([r["gradient_norm"] for r in records]),
        "params": params,
        "model_dir": scaled_bert_dir,
    }


@pytest.fixture(scope="module")
def reference(run):
    return reference_run(run["model_dir"], SETTINGS)


def max_param_difference(ours: dict, theirs: dict) -> float:
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    return max(float(np.max(np.abs(ours[name] - theirs[name]))) for name in theirs)


def test_losses_and_gradient_norms_equal_the_pytorch_reference(run, reference):
    np.testing.assert_allclose(run["loss"], reference["loss"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(run["gradient_norm"], reference["gradient_norm"], rtol=LOSS_RTOL)
    assert (reference["gradient_norm"] > 2 * SETTINGS["max_grad_norm"]).all()  # Clipping acted at every step.


def test_parameters_after_training_equal_the_pytorch_reference(run, reference):
    """Every parameter after STEPS AdamW updates, element-wise. (Attention key biases have an
    exactly zero true gradient; ε = 1e-4 keeps Adam from amplifying float noise in them.)"""
    untrained = reference_run(run["model_dir"], dict(SETTINGS, learning_rate=0.0))["params"]
    moved = max_param_difference(reference["params"], untrained)
    assert moved > 1e-3  # Training moved the parameters far beyond the tolerance.
    for name, expected in reference["params"].items():
        np.testing.assert_allclose(run["params"][name], expected, atol=PARAM_ATOL, rtol=0, err_msg=name)


def test_learning_rate_schedule_warms_up_then_decays_linearly(run, reference):
    """Warm-up (steps 1-2), the peak, mid-decay and the last step, as HF's linear schedule."""
    peak = SETTINGS["learning_rate"]
    np.testing.assert_allclose(run["learning_rate"], reference["learning_rate"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(run["learning_rate"], peak * np.array([0.0, 0.5, 1.0, 2 / 3, 1 / 3]), rtol=1e-6)
    from distilface_jax.training.optimizer import learning_rate_schedule

    after_last = float(learning_rate_schedule(peak, STEPS, SETTINGS["warmup_steps"])(STEPS))
    assert after_last == reference["final_learning_rate"] == 0.0


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_each_setting_alone_changes_the_run(run, reference, setting):
    """With `setting` back at its default, the reference is far from the trainer's run: a
    trainer that ignored or hard-coded this setting could not pass the comparisons above."""
    variant = reference_run(run["model_dir"], dict(SETTINGS, **{setting: DEFAULTS[setting]}))
    loss_gap = float(np.max(np.abs(variant["loss"] - run["loss"]) / np.abs(run["loss"])))
    param_gap = max_param_difference(run["params"], variant["params"])
    schedule_gap = float(np.max(np.abs(variant["learning_rate"] - run["learning_rate"])))
    assert loss_gap > 100 * LOSS_RTOL or param_gap > 100 * PARAM_ATOL or schedule_gap > 1e-6, (
        setting,
        loss_gap,
        param_gap,
    )
