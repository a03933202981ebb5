"""Helpers the test files share (fixtures are in conftest.py): the repository root, the `train`
command line and its CPU environment, config loading, tiny tokenizers and HF model folders, and
the tiny encoder and batches of the step tests."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- configs and the train CLI


def load_config(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def config_from_flags(argv: list[str]):
    """The config exactly as `python -m distilface_jax.train` builds it from its flags (`--config=FILE`
    and `--config.KEY=VALUE` overrides): what an in-process run needs to resume a CLI run's workdir."""
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()
    # train.py's definition; `sys_argv` stands for the command line the overrides are read from.
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values=flag_values, lock_config=True, sys_argv=["train", *argv]
    )
    flag_values(["train", *argv])
    return flag_values.config


def train_command(workdir, *overrides, config="configs/tiny.py"):
    return [
        sys.executable,
        "-m",
        "distilface_jax.train",
        f"--config={ROOT / config}",
        f"--workdir={workdir}",
        *overrides,
    ]


def cpu_env(devices: int = 1) -> dict:
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        HF_HUB_OFFLINE="1",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    env.pop("JAX_NUM_CPU_DEVICES", None)
    return env


# ----------------------------------------------------------------------------- tokenizers and HF model folders


WORDS = (
    "the a an cat dog man woman child plays runs eats sleeps reads writes sits on in under with "
    "red blue green big small happy sad quickly slowly guitar ball park house car tree river book "
    "is are was were and or not very music food water street table . , ! ?"
).split()


def write_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = [f"##{c}" for c in letters]
    path.write_text("\n".join(dict.fromkeys(specials + WORDS + letters + pieces)) + "\n")
    return path


def make_tokenizer(folder: Path):
    from distilface_jax.training.tiny_data import load_tiny_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tiny_tokenizer(str(write_vocab(folder / "vocab.txt")))
    tokenizer.model_max_length = 64
    assert tokenizer("the cat sits")["input_ids"][1:-1] == [tokenizer.vocab[w] for w in ("the", "cat", "sits")]
    return tokenizer


def save_tiny_hf_model(
    folder: Path, model_type: str, *, head: str = "base", seed: int = 0, weight_std: float = 0.0
) -> Path:
    """A random tiny HF model (+ tokenizer) saved with `save_pretrained`, like a user's local folder.

    `weight_std` > 0 redraws every matrix and embedding from N(0, weight_std²) (biases and
    LayerNorm parameters spread by 0.1): BERT's 0.02 keeps a 32-wide model in the near-linear
    range of GELU, tanh and softmax, where a wrong non-linearity hides below 1e-5.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    tokenizer = make_tokenizer(folder)
    vocab_size = tokenizer.vocab_size
    if model_type == "distilbert":
        config = transformers.DistilBertConfig(
            vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64
        )
        model_class = {"base": transformers.DistilBertModel, "mlm": transformers.DistilBertForMaskedLM}[head]
    else:
        config = transformers.BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
        model_class = {"base": transformers.BertModel, "mlm": transformers.BertForPreTraining}[head]
    model = model_class(config).eval()
    # Random init leaves LayerNorm at (1, 0) and biases at 0: perturb every tensor so a
    # swapped or untransposed weight cannot hide behind a symmetric value.
    with torch.no_grad():
        for parameter in model.parameters():
            if weight_std and parameter.dim() == 2:
                parameter.normal_(0.0, weight_std)
            elif weight_std:
                parameter.add_(0.1 * torch.randn_like(parameter))
            else:
                parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    if model_type == "distilbert":  # As HF's DistilBertTokenizer declares: DistilBertModel takes no token types.
        settings = json.loads((folder / "tokenizer_config.json").read_text())
        settings["model_input_names"] = ["input_ids", "attention_mask"]
        (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
    return folder


SENTENCES = [
    "the cat sits on the red table .",
    "a man plays guitar",
    "the small happy child reads a very big book in the park",
    "dogs run",
    "the woman was not sad , she was happy !",
    "water",
]


# ----------------------------------------------------------------------------- the step tests' tiny encoder


def step_config():
    """A 2-layer, 32-wide encoder without dropout (the step tests' model)."""
    from distilface_jax.models.config import EncoderConfig

    return EncoderConfig(
        vocab_size=100,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


@functools.cache
def step_params():
    """Its parameters (with an MLM head), on the host; built once per test process."""
    import jax

    from distilface_jax.models.sentence_model import init_params

    return jax.device_get(init_params(step_config(), jax.random.key(0), with_mlm_head=True))


def make_batch(batch_size=16, num_views=1, length=12, seed=0, token_types=False):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, 100, (batch_size, num_views, length)).astype(np.int32)
    input_ids[:, :, 0] = 2  # [CLS]
    mask = np.ones_like(input_ids)
    for row in range(batch_size):  # Mixed lengths: padding must be masked everywhere.
        mask[row, :, rng.integers(3, length + 1) :] = 0
    input_ids = np.where(mask == 1, input_ids, 0).astype(np.int32)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if token_types:
        batch["token_type_ids"] = np.zeros_like(input_ids)
    return batch


def central_difference(function, x, h=1e-6):
    """d function / dx by central differences in float64: the gradient references' reference."""
    x = x.astype(np.float64)
    gradient = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        gradient[index] = (function(up) - function(down)) / (2 * h)
    return gradient


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
    import jax

    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=rtol, atol=atol), actual, expected)
