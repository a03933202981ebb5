"""Every config key, declared once: its default, its one-line meaning and its check.

`base_config()` (and `distill_block()`, the block distillation configs add), `train --help`
(`key_help.describe`) and the pre-flight value checks (`check_values`) are all derived from
these declarations, so a key cannot gain one without the others. Declaration order is the
order of the config (and so of `train --help` and of a run's config.json). Checks that need
the file system (does the training file exist, is the STS data complete) are the CLI's
pre-flight (`cli/checks.py`); the ones here need only the values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import ml_collections

from distilface_jax.models.pooling import POOLERS

Config = ml_collections.ConfigDict  # What every function that takes "the config" takes.

# (value, whole config) → what is wrong with the value, or None.
Check = Callable[[Any, Config], Optional[str]]


@dataclasses.dataclass(frozen=True)
class Key:
    name: str  # dotted: "model.pooler"
    default: Any
    help: str  # its one-line meaning in `train --help`
    check: Optional[Check] = None
    kind: Optional[type] = None  # the type of a None default (an ml_collections placeholder)


class ConfigValueError(ValueError):
    """A config value that is wrong whatever the data: the message names the key."""


def at_least(minimum: int, note: str = "") -> Check:
    return lambda value, config: None if value >= minimum else f"must be >= {minimum}{note}"


def one_of(choices: Sequence[str]) -> Check:
    return lambda value, config: None if value in choices else f"must be one of {', '.join(choices)}"


def parse_window(text: str) -> Optional[tuple[int, int]]:
    """`profile_steps`: '' → None; 'START:STOP' → (START, STOP) with 0 <= START < STOP (steps
    counted from 0)."""
    if not text:
        return None
    start, sep, stop = str(text).partition(":")
    if not sep or not start.strip().isdigit() or not stop.strip().isdigit():
        raise ValueError("expected START:STOP, two step numbers, e.g. 10:15")
    window = int(start), int(stop)
    if window[0] >= window[1]:
        raise ValueError("START must be below STOP")
    return window


def _profile_window(value, config: Config) -> Optional[str]:
    try:
        parse_window(value)
    except ValueError as error:
        return str(error)
    return None


def _epochs(value, config: Config) -> Optional[str]:
    return None if config.max_steps != 0 or value >= 1 else "must be >= 1 when max_steps is 0"


def _positive(value, config: Config) -> Optional[str]:
    return None if value > 0 else "must be > 0"


def _needs_cut_student(value, config: Config) -> Optional[str]:
    """Token-level targets need the student's tokens and layers to be the teacher's own."""
    if value < 0:
        return "must be >= 0"
    if value and not config.distill.get("student_layers"):
        return (
            "needs a student cut from the teacher (distill.student_layers), whose tokens and layers are the teacher's"
        )
    return None


def _needs_cached_contrastive(value, config: Config) -> Optional[str]:
    """The queue holds past batches' cached teacher embeddings: negatives of the InfoNCE term."""
    if value < 0:
        return "must be >= 0"
    if value and not config.distill.get("contrastive_weight"):
        return "adds negatives to the InfoNCE term: set distill.contrastive_weight > 0"
    if value and config.distill.get("teacher_in_step"):
        return "reads past batches from the cached teacher embeddings: not with distill.teacher_in_step"
    return None


_TINY = "builtin:tiny model only: "
_DISTILL = "distillation: "

KEYS: tuple[Key, ...] = (
    Key("seed", 0, "seed of the initial MLP head, dropout masks and data order"),
    Key(
        "batch_size",
        64,
        "global batch: split over every device of every host; every anchor sees all its candidates",
        at_least(1),
    ),
    Key("num_epochs", 1, "passes over the training data (used when max_steps is 0)", _epochs),
    Key(
        "max_steps", 0, "> 0: train exactly this many steps (overrides num_epochs)", at_least(0, " (0: use num_epochs)")
    ),
    Key("learning_rate", 3e-5, "peak AdamW learning rate, decayed linearly to 0 at the last step"),
    Key("warmup_steps", 0, "linear warm-up steps before the decay"),
    Key("weight_decay", 0.0, "AdamW weight decay (not on biases and LayerNorm scales)"),
    Key("adam_b1", 0.9, "AdamW beta1"),
    Key("adam_b2", 0.999, "AdamW beta2"),
    Key("adam_eps", 1e-8, "AdamW epsilon"),
    Key("max_grad_norm", 1.0, "clip gradients to this global norm (0 = no clipping)"),
    Key("log_every", 50, "write metrics.jsonl / TensorBoard every N steps", at_least(1)),
    Key(
        "eval_every",
        125,
        "STS-B dev evaluation every N steps, keeping the best checkpoint (0 = none)",
        at_least(0, " (0: no evaluation)"),
    ),
    Key("checkpoint_every", 250, "save a resumable checkpoint every N steps", at_least(1)),
    Key("keep_checkpoints", 2, "how many of the latest checkpoints to keep", at_least(1)),
    Key(
        "grad_cache_chunk_size",
        0,
        "GradCache: examples per chunk per device, same gradient in less memory (0 = off)",
    ),
    Key("extend", False, "True: continue a finished run to a higher max_steps/num_epochs, the schedule re-planned"),
    Key(
        "profile_steps",
        "",
        "'START:STOP': jax.profiler trace of steps START..STOP-1 in WORKDIR/profile ('' = off)",
        _profile_window,
    ),
    Key(
        "model.name_or_path",
        "distilbert-base-uncased",
        "HF hub id or local HF folder to start from ('builtin:tiny' = generated demo model)",
    ),
    Key(
        "model.pooler",
        "cls",
        "cls, cls_before_pooler, avg, avg_first_last or avg_top2 (SimCSE's poolers)",
        one_of(POOLERS),
    ),
    # Unsup SimCSE: the MLP head is dropped at evaluation.
    Key("model.mlp_only_train", True, "cls pooler: the MLP head is used in training only (unsup SimCSE)"),
    # "random": a fresh N(0, 0.02) head, bias 0, from `seed`, as SimCSE's BertForCL (whose BERT has no
    # pooler). "pretrained": the checkpoint's BERT pooler / sentence-transformers Dense head, e.g. to
    # continue a released SimCSE model. (Checked when the model is built: `initial_model`.)
    Key(
        "model.mlp_init",
        "random",
        "random (SimCSE: a fresh N(0, 0.02) head from seed) or pretrained (the checkpoint's pooler)",
    ),
    Key("model.dropout", 0.1, "hidden dropout, which makes SimCSE's two views"),
    Key("model.attention_dropout", 0.1, "attention-probability dropout"),
    Key("model.dtype", "float32", "compute dtype (float32, or bfloat16 on TPU/GPU); parameters stay float32"),
    Key("model.attention_impl", "xla", "xla, or dot_product_attention (fused kernel when attention dropout is 0)"),
    Key("model.tiny.hidden_size", 32, _TINY + "hidden size"),
    Key("model.tiny.num_layers", 2, _TINY + "layers"),
    Key("model.tiny.num_heads", 4, _TINY + "attention heads"),
    Key("model.tiny.intermediate_size", 64, _TINY + "feed-forward size"),
    Key("model.tiny.max_position_embeddings", 64, _TINY + "longest sequence"),
    Key("loss.temperature", 0.05, "InfoNCE temperature tau"),
    Key("loss.hard_negative_weight", 0.0, "added to the logit of each anchor's own hard negative (sup data)"),
    Key("loss.do_mlm", False, "add SimCSE's auxiliary MLM loss"),
    Key("loss.mlm_weight", 0.1, "weight of the MLM loss"),
    Key("loss.mlm_probability", 0.15, "fraction of tokens masked for MLM"),
    # False: the MLM decoder is a matrix of its own, as SimCSE's BertForCL; True: tied to the word
    # embeddings (what runs made before this key did; kept so they resume).
    Key(
        "loss.mlm_tie_decoder",
        False,
        "MLM decoder tied to the word embeddings (False = untied, as SimCSE's BertForCL)",
    ),
    # Matryoshka (training/matryoshka.py): the loss summed over these leading embedding dimensions,
    # e.g. (384, 256, 128, 64), with optional weights (None: all 1); None = the plain loss. Both
    # recipes (SimCSE's InfoNCE, distillation's MSE + InfoNCE). Checked in cli/checks.py (against
    # the embedding width once the model is known, in the recipe).
    Key(
        "loss.matryoshka_dims",
        None,
        "Matryoshka: loss summed over these leading dims, e.g. (384,256,128,64) (None = plain)",
        kind=tuple,
    ),
    Key("loss.matryoshka_weights", None, "Matryoshka: one weight per dimension (None = all 1)", kind=tuple),
    Key(
        "data.train_file",
        "data/wiki1m_for_simcse.txt",
        "text file (one sentence per line), csv (sent0,sent1[,hard_neg]) or hub data set id; or a mixture "
        "(docs/data.md): a list 'a.txt,b.txt' and/or globs (weight 1 each), or a FILE.mixture.json "
        '{"seed": 0, "sources": [{"path": ..., "weight": 1.0, "cap": N}]}: lines stripped, capped, '
        "deduplicated, weighted; with data.token_store=True or gs:// a list/glob is files concatenated",
    ),
    Key(
        "data.format",
        "unsup",
        "unsup (one sentence per line) or sup (csv sent0,sent1[,hard_neg])",
        lambda value, config: None if value in ("unsup", "sup") else "must be 'unsup' or 'sup'",
    ),
    Key(
        "data.max_seq_length",
        32,
        "training sentences are truncated/padded to this many tokens",
        at_least(2),
    ),
    Key(
        "data.cache_dir",
        "",
        "cache folder of tokens and teacher embeddings ('' = WORKDIR/cache for tokens, "
        "the user's cache folder for teacher embeddings: docs/distillation.md)",
    ),
    # The token store (training/token_store.py): tokenized once into shards on disk, read row by row,
    # so a host's memory does not grow with the corpus. Same batches as the in-memory path; a gs://
    # train_file always uses it (a local list or glob is a mixture unless token_store is True).
    Key("data.token_store", False, "True: tokenize once into shards on disk read row by row (corpora beyond memory)"),
    Key("data.store_dir", "", "token store folder, local or gs:// ('' = CACHE_DIR/store)"),
    Key("data.store_shard_bytes", 16 << 20, "token store: input bytes per shard (one worker's job)", at_least(1)),
    Key("data.num_workers", 1, "token store: tokenizing processes per host", at_least(1)),
    Key("data.prefetch", 2, "host batches assembled ahead on a background thread (0 = in the loop)", at_least(0)),
    Key(
        "eval.sts_dir",
        "SentEval/data/downstream",
        "SentEval data folder holding STS/ and SICK/ (launch/download_senteval_sts.sh)",
    ),
    Key("eval.batch_size", 128, "sentences per evaluation batch (at most)"),
    Key("eval.final_test", True, "7-task STS test of the best checkpoint at the end"),
)

# The `distill` block: added by distillation configs only (`distill_block()`), so SimCSE configs
# and their workdirs are unchanged. What each setting does: distill/run.py.
DISTILL_KEYS: tuple[Key, ...] = (
    Key(
        "distill.teacher",
        "sentence-transformers/all-MiniLM-L6-v2",
        _DISTILL + "the teacher, a sentence-transformers/HF folder or hub id",
    ),
    Key("distill.teacher_pooler", "", _DISTILL + "'' = the teacher folder's own pooling, else a pooler name"),
    Key(
        "distill.teacher_normalize",
        None,
        _DISTILL + "None = the teacher folder's own Normalize, else True/False",
        kind=bool,
    ),
    Key(
        "distill.teacher_max_length",
        0,
        _DISTILL + "teacher tokens (0: its limit if cached, data.max_seq_length in step)",
    ),
    Key(
        "distill.student_layers",
        None,
        _DISTILL + "teacher layers the student keeps, e.g. [0,3,5] ([] = model.name_or_path)",
        kind=tuple,
    ),
    Key(
        "distill.teacher_in_step",
        False,
        _DISTILL + "run the teacher in every step instead of caching its embeddings",
    ),
    Key(
        "distill.contrastive_weight",
        0.0,
        _DISTILL + "weight of InfoNCE, student vs every teacher embedding of the batch",
    ),
    Key("distill.temperature", 0.05, _DISTILL + "temperature of that InfoNCE term"),
    Key(
        "distill.queue_steps",
        0,
        _DISTILL + "InfoNCE also against the teacher embeddings of the K previous batches",
        _needs_cached_contrastive,
    ),
    Key(
        "distill.relational_weight",
        0.0,
        _DISTILL + "weight of KL(teacher || student) of in-batch similarities (global batch)",
        at_least(0),
    ),
    Key(
        "distill.relational_temperature",
        0.05,
        _DISTILL + "temperature of those in-batch similarity distributions",
        _positive,
    ),
    Key(
        "distill.hidden_weight",
        0.0,
        _DISTILL + "weight of hidden-state distillation, student layer i to its teacher layer",
        _needs_cut_student,
    ),
    Key(
        "distill.hidden_loss",
        "cosine",
        _DISTILL + "hidden-state loss per token: cosine (DistilBERT) or mse",
        one_of(("cosine", "mse")),
    ),
    Key(
        "distill.attention_weight",
        0.0,
        _DISTILL + "weight of MiniLM attention + value relations of the last layer",
        _needs_cut_student,
    ),
    Key(
        "distill.teacher_batch_size",
        128,
        _DISTILL + "sentences per batch and device when caching teacher embeddings",
    ),
    Key(
        "distill.keep_projection",
        False,
        "distillation, widths differ: keep the D_s→D_t map in the model (evaluated, exported)",
    ),
)

ALL_KEYS: tuple[Key, ...] = KEYS + DISTILL_KEYS


def build(keys: Sequence[Key], prefix: str = "") -> Config:
    """The ConfigDict of `keys` (dotted names below `prefix`), in declaration order."""
    config = Config()
    for key in keys:
        *parents, leaf = key.name[len(prefix) :].split(".")
        node = config
        for parent in parents:
            if parent not in node:
                node[parent] = Config()
            node = node[parent]
        if key.default is None and key.kind is not None:
            node[leaf] = ml_collections.config_dict.placeholder(key.kind)
        else:
            node[leaf] = key.default
    return config


def recipe_name(config: Config) -> str:
    """Which training recipe a config asks for: "distill" when it has a distill block with a
    teacher (configs/distill_*.py), else "simcse"."""
    return "distill" if "distill" in config and bool(config.distill.teacher) else "simcse"


def _lookup(config: Config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def check_values(config: Config) -> None:
    """Every declared check of the keys this config has, in declaration order; the first wrong
    value raises ConfigValueError naming it (`--config.KEY=VALUE: what is wrong`)."""
    for key in ALL_KEYS:
        if key.check is None or key.name.split(".")[0] not in config:
            continue
        value = _lookup(config, key.name)
        what = key.check(value, config)
        if what:
            raise ConfigValueError(f"--config.{key.name}={value!r}: {what}")
