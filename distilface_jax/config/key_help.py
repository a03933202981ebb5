"""What each config key means (for `train --help`), and misspelt `--config.KEY` overrides.

The table is checked against `config.base.base_config()` by a test, both ways, so a new key
cannot be added without its one-line meaning.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

KEY_HELP = {
    "seed": "seed of the initial MLP head, dropout masks and data order",
    "batch_size": "global batch: split over every device of every host; every anchor sees all its candidates",
    "num_epochs": "passes over the training data (used when max_steps is 0)",
    "max_steps": "> 0: train exactly this many steps (overrides num_epochs)",
    "learning_rate": "peak AdamW learning rate, decayed linearly to 0 at the last step",
    "warmup_steps": "linear warm-up steps before the decay",
    "weight_decay": "AdamW weight decay (not on biases and LayerNorm scales)",
    "adam_b1": "AdamW beta1",
    "adam_b2": "AdamW beta2",
    "adam_eps": "AdamW epsilon",
    "max_grad_norm": "clip gradients to this global norm (0 = no clipping)",
    "log_every": "write metrics.jsonl / TensorBoard every N steps",
    "eval_every": "STS-B dev evaluation every N steps, keeping the best checkpoint (0 = none)",
    "checkpoint_every": "save a resumable checkpoint every N steps",
    "keep_checkpoints": "how many of the latest checkpoints to keep",
    "grad_cache_chunk_size": "GradCache: examples per chunk per device, same gradient in less memory (0 = off)",
    "extend": "True: continue a finished run to a higher max_steps/num_epochs, the schedule re-planned",
    "profile_steps": "'START:STOP': jax.profiler trace of steps START..STOP-1 in WORKDIR/profile ('' = off)",
    "model.name_or_path": "HF hub id or local HF folder to start from ('builtin:tiny' = generated demo model)",
    "model.pooler": "cls, cls_before_pooler, avg, avg_first_last or avg_top2 (SimCSE's poolers)",
    "model.mlp_only_train": "cls pooler: the MLP head is used in training only (unsup SimCSE)",
    "model.mlp_init": "random (SimCSE: a fresh N(0, 0.02) head from seed) or pretrained (the checkpoint's pooler)",
    "model.dropout": "hidden dropout, which makes SimCSE's two views",
    "model.attention_dropout": "attention-probability dropout",
    "model.dtype": "compute dtype (float32, or bfloat16 on TPU/GPU); parameters stay float32",
    "model.attention_impl": "xla, or dot_product_attention (fused kernel when attention dropout is 0)",
    "model.tiny.hidden_size": "builtin:tiny model only: hidden size",
    "model.tiny.num_layers": "builtin:tiny model only: layers",
    "model.tiny.num_heads": "builtin:tiny model only: attention heads",
    "model.tiny.intermediate_size": "builtin:tiny model only: feed-forward size",
    "model.tiny.max_position_embeddings": "builtin:tiny model only: longest sequence",
    "loss.temperature": "InfoNCE temperature tau",
    "loss.hard_negative_weight": "added to the logit of each anchor's own hard negative (sup data)",
    "loss.do_mlm": "add SimCSE's auxiliary MLM loss",
    "loss.mlm_weight": "weight of the MLM loss",
    "loss.mlm_tie_decoder": "MLM decoder tied to the word embeddings (False = untied, as SimCSE's BertForCL)",
    "loss.mlm_probability": "fraction of tokens masked for MLM",
    "data.train_file": "text file (one sentence per line), csv (sent0,sent1[,hard_neg]) or hub data set id",
    "data.format": "unsup (one sentence per line) or sup (csv sent0,sent1[,hard_neg])",
    "data.max_seq_length": "training sentences are truncated/padded to this many tokens",
    "data.cache_dir": "cache folder of tokens and teacher embeddings ('' = WORKDIR/cache for tokens, "
    "the user's cache folder for teacher embeddings: docs/distillation.md)",
    "eval.sts_dir": "SentEval data folder holding STS/ and SICK/ (launch/download_senteval_sts.sh)",
    "eval.batch_size": "sentences per evaluation batch (at most)",
    "distill.teacher": "distillation: the teacher, a sentence-transformers/HF folder or hub id",
    "distill.teacher_pooler": "distillation: '' = the teacher folder's own pooling, else a pooler name",
    "distill.teacher_normalize": "distillation: None = the teacher folder's own Normalize, else True/False",
    "distill.teacher_max_length": "distillation: teacher tokens (0: its limit if cached, data.max_seq_length in step)",
    "distill.student_layers": "distillation: teacher layers the student keeps, e.g. [0,3,5] ([] = model.name_or_path)",
    "distill.teacher_in_step": "distillation: run the teacher in every step instead of caching its embeddings",
    "distill.contrastive_weight": "distillation: weight of InfoNCE, student vs every teacher embedding of the batch",
    "distill.temperature": "distillation: temperature of that InfoNCE term",
    "distill.teacher_batch_size": "distillation: sentences per batch and device when caching teacher embeddings",
    "distill.keep_projection": "distillation, widths differ: keep the D_s→D_t map in the model (evaluated, exported)",
    "eval.final_test": "7-task STS test of the best checkpoint at the end",
}


def flat_items(config, prefix: str = "") -> list[tuple[str, object]]:
    """[(dotted key, value)] of every leaf of a ConfigDict, in definition order."""
    items = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            items += flat_items(value, f"{name}.")
        else:
            items.append((name, value))
    return items


def describe(config) -> str:
    """One line per key: name, default (this config's value) and meaning."""
    items = flat_items(config)
    width = max(len(f"--config.{key}={value!r}") for key, value in items)
    return "\n".join(
        f"  {f'--config.{key}={value!r}':<{width}}  {KEY_HELP.get(key, '')}".rstrip() for key, value in items
    )


def override_keys(argv: Sequence[str]) -> list[str]:
    """Dotted keys of `--config.KEY=value` / `--config.KEY value` arguments."""
    return [key for key, _ in overrides(argv)]


def overrides(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """(dotted key, raw value or None when it is the next argument) of each `--config.KEY` argument."""
    found = []
    for index, argument in enumerate(argv):
        if argument.startswith("--config."):
            key, sep, value = argument[len("--config.") :].partition("=")
            found.append((key, value if sep else (argv[index + 1] if index + 1 < len(argv) else None)))
    return found


def value_message(key: str, raw: str | None, default) -> str | None:
    """None when `raw` parses as the type of the key's default; else the error naming both."""
    if raw is None or default is None or isinstance(default, str):
        return None
    kind = type(default)
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
        elif kind in (int, float):
            kind(raw)
        else:
            return None
    except ValueError:
        return f"--config.{key}={raw}: expected {kind.__name__} like the default {default!r}"
    return None


def unknown_key_message(key: str, known: Iterable[str]) -> str | None:
    """None for a known key (or a prefix of one: a whole sub-config); else the error with a suggestion."""
    known = list(known)
    if key in known or any(k.startswith(key + ".") for k in known):
        return None
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean --config.{close[0]}?" if close else "; see --help for the keys"
    return f"--config.{key}: no such config key{hint}"
