"""The student: a layer subset of the teacher (as DistilBERT was initialised), or any HF encoder.

A cut student copies the teacher's embeddings and the chosen layers, renumbered 0..k-1
(Sanh et al. 2019 took every other layer of BERT; which layers matters a lot, see
docs/distillation.md). Its tokenizer is the teacher's. A student from `config.model.name_or_path`
keeps its own tokenizer: each model reads the same text with its own.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

from distilface_jax.models.config import EncoderConfig


class StudentError(ValueError):
    """A student the config cannot build: one line naming the setting."""


def check_layers(layers: Sequence[int], num_teacher_layers: int, source: str) -> list[int]:
    """The layer indices, checked: non-empty, in range, strictly increasing."""
    layers = [int(layer) for layer in layers]
    if not layers:
        raise StudentError("config.distill.student_layers is empty")
    for layer in layers:
        if not 0 <= layer < num_teacher_layers:
            raise StudentError(
                f"config.distill.student_layers: layer {layer} is out of range for the "
                f"{num_teacher_layers}-layer teacher {source} (valid: 0..{num_teacher_layers - 1})"
            )
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise StudentError(f"config.distill.student_layers must be strictly increasing, got {layers}")
    return layers


def cut_layers(
    config: EncoderConfig, params: dict, layers: Sequence[int], source: str = "teacher"
) -> tuple[EncoderConfig, dict]:
    """(student config, student params): embeddings, MLP head and `layers` of the teacher copied.

    params: a SentenceEncoder tree {"encoder": {"embeddings", "layer_0", ...}, "mlp", ...}.
    """
    layers = check_layers(layers, config.num_layers, source)
    encoder = params["encoder"]
    student_encoder = {"embeddings": copy.deepcopy(encoder["embeddings"])}
    for new_index, old_index in enumerate(layers):
        student_encoder[f"layer_{new_index}"] = copy.deepcopy(encoder[f"layer_{old_index}"])
    student = {name: copy.deepcopy(value) for name, value in params.items() if name not in ("encoder", "mlm_head")}
    student["encoder"] = student_encoder
    return config.replace(num_layers=len(layers)), student


def check_vocabulary(config: EncoderConfig, tokenizer: Any, source: str) -> None:
    """A tokenizer that can emit ids past the embedding table would index out of range (which
    XLA clamps silently), so it is an error here."""
    size = len(tokenizer)
    if size > config.vocab_size:
        raise StudentError(
            f"{source}: its tokenizer has {size} tokens but the model's vocabulary has "
            f"{config.vocab_size} (config.json vocab_size): they do not belong together"
        )


def count_parameters(params: dict) -> int:
    import jax

    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
