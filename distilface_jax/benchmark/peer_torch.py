"""The PyTorch peer: one unsupervised SimCSE training step as the reference implementation does it.

Same semantics as `../shared/bench/peer_torch_simcse.py` (the peer the "Numbers to beat" in
DESIGN.md were measured with), made importable so `python -m distilface_jax.benchmark --peer torch`
times it in the same process, on the same device, batch and sequence length as our step:

  - HF `DistilBertModel` / `BertModel` (no pooling layer, as SimCSE's `BertForCL`) of the shape of
    our `EncoderConfig`, random init, `train()` mode: dropout is the augmentation;
  - both dropout views in ONE forward of 2B rows (`repeat_interleave`), CLS → Linear → tanh;
  - cosine similarities / temperature, cross-entropy against the diagonal, AdamW (lr 3e-5);
  - `torch.autocast` to bf16 when the benchmark's dtype is bfloat16 (CUDA or CPU), off for float32;
  - optionally `torch.compile` of the encoder + head (the loss and optimizer stay eager).

Deliberate differences from our step, kept because the published peer numbers have them:
no gradient clipping (ours clips at global norm 1.0, as HF Trainer does), and PyTorch's default
dropout RNG instead of per-example keys. Both cost well under 1 % of a step.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Mapping, Optional

import numpy as np

TEMPERATURE = 0.05
LEARNING_RATE = 3e-5


def _encoder(hf_config: Mapping[str, Any]):
    """HF encoder of this `config.json` shape (an `EncoderConfig.to_hf_dict()`), randomly initialised."""
    import transformers

    fields = {k: v for k, v in hf_config.items() if k not in ("model_type", "architectures")}
    if hf_config["model_type"] == "distilbert":
        return transformers.DistilBertModel(transformers.DistilBertConfig(**fields))
    # SimCSE's BertForCL builds BertModel(add_pooling_layer=False) and adds its own MLP head.
    return transformers.BertModel(transformers.BertConfig(**fields), add_pooling_layer=False)


def _simcse_module(hf_config: Mapping[str, Any]):
    import torch.nn as nn

    class SimCSE(nn.Module):
        """Encoder + SimCSE's MLP pooler: tanh(W h_cls + b)."""

        def __init__(self):
            super().__init__()
            self.enc = _encoder(hf_config)
            hidden = self.enc.config.hidden_size  # DistilBertConfig maps it to `dim`
            self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())

        def forward(self, ids, mask):
            return self.mlp(self.enc(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0])

    return SimCSE()


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def time_simcse_step(
    hf_config: Mapping[str, Any],
    input_ids: np.ndarray,
    *,
    steps: int,
    dtype: str = "bfloat16",
    compile: bool = False,
    warmup: int = 3,
    device: Optional[str] = None,
    seed: int = 0,
) -> dict:
    """Times `steps` SimCSE updates on one [B, L] token batch (all tokens real, like ours).

    Steps are issued back to back and synchronised once at the end, as CUDA eager does
    asynchronously anyway. Returns step_ms, sentences/s, warm-up seconds (torch.compile's
    compile happens there) and, on CUDA, the peak allocated memory of this run.
    """
    import torch
    import torch.nn.functional as F

    device = device or default_device()
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = True  # as the published peer; affects float32 only
    model = _simcse_module(hf_config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    forward = torch.compile(model) if compile else model
    batch, length = input_ids.shape
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    # Row 2i and 2i+1 are the same sentence: one forward, two dropout masks.
    ids2, mask2 = ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
    labels = torch.arange(batch, device=device)
    autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device, dtype=autocast_dtype)

    def step():
        with autocast():
            z = forward(ids2, mask2).view(batch, 2, -1).float()
            sim = F.cosine_similarity(z[:, 0, None], z[None, :, 1], dim=-1) / TEMPERATURE
            loss = F.cross_entropy(sim, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(max(warmup, 1)):
        loss = step()
    _synchronize(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _synchronize(device)
    step_s = (time.perf_counter() - start) / steps
    result = dict(
        peer="torch-hf-" + hf_config["model_type"],
        compile=compile,
        dtype=dtype,
        batch=batch,
        seq_len=length,
        step_ms=step_s * 1e3,
        sentences_per_s=batch / step_s,
        warmup_s=warmup_s,
        loss=float(loss.item()),
        device=device,
        torch_device_name=torch.cuda.get_device_name() if device == "cuda" else "cpu",
        torch_threads=torch.get_num_threads(),
        peak_memory_bytes=torch.cuda.max_memory_allocated() if device == "cuda" else None,
        peak_memory_source="torch.cuda.max_memory_allocated" if device == "cuda" else None,
    )
    model = optimizer = forward = None  # Frees the device memory (`step` holds these cells) before empty_cache.
    if device == "cuda":
        torch.cuda.empty_cache()
    return result
