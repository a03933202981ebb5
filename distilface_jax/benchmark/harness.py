"""Benchmark harness: the real training step (`training.step.make_train_step`), STS and encode timings.

    python -m distilface_jax.benchmark --preset distilbert-base --batch-sizes 64,512 --seq-len 32 \\
        --dtype bfloat16 --steps 50 --peer torch --peer-compile --output results.jsonl
    python -m distilface_jax.benchmark --preset tiny --dtype float32 --steps 3   # CPU, seconds

Every measurement is printed as one JSON line (and appended to `--output`). Models are random
initialisations of a preset shape: speed does not depend on the weights. All tokens of the
synthetic batch are real (no padding), as in the PyTorch peer.

Model FLOPs per training step (MFU's numerator; the usual 6·N·T, Kaplan et al. 2020):

    F = 6 · P_layers · (2B · L)  +  6 · P_head · 2B  +  12 · n_layers · (2B) · L² · H

for global batch B sentences, 2 dropout views each, L tokens per row, hidden size H. P_layers
is every Transformer-layer parameter (embedding tables and the embedding LayerNorm excluded:
a lookup is no matmul); P_head is the MLP head, applied to the [CLS] row only. 6 = 2 (multiply
+ add) × 3 (forward, input gradient, weight gradient). The attention term is QKᵀ and AV, each
2·L²·H per row and layer forward, ×3 for training. The contrastive loss (2·B²·H) is left out.
MFU = F / step time / (measured peak FLOP/s of one device × devices); the peak is a big
jitted matmul on the same device (bfloat16 on accelerators if the step is bf16, float32 on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from importlib import metadata
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distilface_jax.benchmark import peer_torch
from distilface_jax.benchmark.hlo_anatomy import hlo_stats
from distilface_jax.config.base import base_config
from distilface_jax.evaluation import sts
from distilface_jax.evaluation.inference import make_embed_fn
from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.sentence_model import SentenceEncoder, init_params
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.training import sharding, tiny_data
from distilface_jax.training.objective import LossConfig
from distilface_jax.training.optimizer import OptimizerSettings, make_optimizer
from distilface_jax.training.state import create_train_state, state_shardings
from distilface_jax.training.step import make_train_step

PRESETS = {
    "tiny": EncoderConfig(
        vocab_size=1000, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=64
    ),
    "distilbert-base": EncoderConfig(),
    "bert-base": EncoderConfig(model_type="bert", num_layers=12, type_vocab_size=2),
}
NUM_VIEWS = 2  # unsupervised SimCSE: every sentence twice, two dropout masks
_OPTIMIZER = OptimizerSettings.from_config(base_config())  # SimCSE's recipe, as training uses it
_TOTAL_STEPS = 1_000_000  # the schedule's length: the learning rate barely moves over a benchmark


# ----------------------------------------------------------------------------- model FLOPs


def parameter_counts(params) -> dict[str, int]:
    """{"layers", "head", "embedding"} parameter counts of a SentenceEncoder tree."""
    counts = {"layers": 0, "head": 0, "embedding": 0}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [getattr(key, "key", str(key)) for key in path]
        group = "head" if names[0] == "mlp" else "embedding" if "embeddings" in names else "layers"
        counts[group] += int(np.prod(leaf.shape))
    return counts


def model_flops_per_step(config: EncoderConfig, counts: dict[str, int], batch: int, seq_len: int) -> float:
    """F of the module docstring, for one step on a global batch of `batch` sentences."""
    rows = NUM_VIEWS * batch
    dense = 6 * counts["layers"] * rows * seq_len + 6 * counts["head"] * rows
    attention = 12 * config.num_layers * rows * seq_len**2 * config.hidden_size
    return float(dense + attention)


def measure_peak_flops(device, dtype: str, repeats: int = 3) -> float:
    """FLOP/s of a big square matmul on `device`: the best of `repeats` timed bursts."""
    on_cpu = device.platform == "cpu"
    size, burst = (1024, 4) if on_cpu else (8192, 20)
    keys = jax.random.split(jax.random.key(0))
    a, b = (jax.device_put(jax.random.normal(key, (size, size), dtype), device) for key in keys)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(burst):
            # Each result dropped at once: holding all of them would raise the process-lifetime
            # memory peak that the training-step records report.
            out = matmul(a, b)
        out.block_until_ready()  # one stream: the last product finishes after the others
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 * burst / best


def peak_dtype(device, dtype: str) -> str:
    return "float32" if device.platform == "cpu" else dtype


# ----------------------------------------------------------------------------- environment


def versions() -> dict[str, Optional[str]]:
    """Installed versions, read from package metadata (so torch is not imported just for this)."""
    found: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "torch", "transformers"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment() -> dict:
    device = jax.local_devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "host": platform.node(),
        "versions": versions(),
    }


def peak_memory(compiled) -> tuple[Optional[int], Optional[str], Optional[int]]:
    """(peak bytes, where it came from, the compiled step's own estimate).

    The allocator's process-lifetime peak where the backend keeps one (GPU/TPU); else XLA's
    buffer-assignment estimate for the step; else the process's peak RSS.
    """
    compiled_bytes = None
    try:
        analysis = compiled.memory_analysis()
        compiled_bytes = int(getattr(analysis, "peak_memory_in_bytes", 0)) or int(
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes
            - analysis.alias_size_in_bytes
        )
    except Exception:  # noqa: BLE001 - not every backend implements memory_analysis
        pass
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device.memory_stats", compiled_bytes
    if compiled_bytes:
        return compiled_bytes, "compiled.memory_analysis", compiled_bytes
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss_kib * 1024, "getrusage.ru_maxrss", compiled_bytes


# ----------------------------------------------------------------------------- training step


def synthetic_tokens(config: EncoderConfig, batch: int, seq_len: int, seed: int = 0) -> np.ndarray:
    """[B, L] int32 random ids, every token real (no padding: the peer's batch too)."""
    low = min(1000, config.vocab_size // 2)  # the peer's range, [1000, 30000), on a big vocab
    return np.random.default_rng(seed).integers(low, config.vocab_size, (batch, seq_len), dtype=np.int32)


def build_step(config: EncoderConfig, args: argparse.Namespace, mesh):
    """(jitted step, replicated state, host params) built as the training loop builds them."""
    model = SentenceEncoder(config, pooler="cls", dtype=jnp.dtype(args.dtype), attention_impl=args.attention_impl)
    optimizer, schedule = make_optimizer(_OPTIMIZER, _TOTAL_STEPS)
    params = init_params(config, jax.random.key(args.seed))
    replicated = sharding.replicated(mesh)
    state = create_train_state(params, optimizer, args.seed, replicated)
    step = make_train_step(
        model, optimizer, schedule, mesh, NUM_VIEWS, LossConfig(), state_shardings(state, replicated)
    )
    return step, state, params


def run_steps(step, state, batch, steps: int, *, block_each: bool):
    """(state, seconds) for `steps` updates. Pipelined: dispatch back to back, block once at the end."""
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
        if block_each:
            jax.block_until_ready(metrics)
    jax.block_until_ready(state)
    return state, time.perf_counter() - start


def bench_train(config: EncoderConfig, batch_size: int, args, mesh, peak_flops: float) -> tuple[dict, np.ndarray]:
    """One JSON record for our step at this batch size, and the host tokens (for the peer)."""
    sharding.check_batch_size(batch_size, mesh)
    tokens = synthetic_tokens(config, batch_size, args.seq_len, args.seed)
    step, state, params = build_step(config, args, mesh)
    host_batch = {"input_ids": tokens[:, None, :], "attention_mask": np.ones_like(tokens)[:, None, :]}  # [B, 1, L]
    batch = sharding.global_batch(host_batch, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = step(state, batch)  # jit's cache already holds the executable compiled above
    first_loss = float(jax.device_get(metrics["loss"]))
    first_step_s = time.perf_counter() - start
    state, _ = run_steps(step, state, batch, args.warmup, block_each=False)
    state, pipelined_s = run_steps(step, state, batch, args.steps, block_each=False)
    state, blocking_s = run_steps(step, state, batch, args.steps, block_each=True)
    step_s, blocking_step_s = pipelined_s / args.steps, blocking_s / args.steps
    counts = parameter_counts(params)
    flops = model_flops_per_step(config, counts, batch_size, args.seq_len)
    memory, memory_source, compiled_memory = peak_memory(compiled)
    record = dict(
        kind="train_step",
        batch=batch_size,
        step_ms=step_s * 1e3,
        sentences_per_s=batch_size / step_s,
        tokens_per_s=NUM_VIEWS * batch_size * args.seq_len / step_s,
        mfu=flops / step_s / peak_flops,
        step_ms_blocking=blocking_step_s * 1e3,
        mfu_blocking=flops / blocking_step_s / peak_flops,
        model_tflops_per_step=flops / 1e12,
        compile_s=compile_s,
        first_step_s=first_step_s,
        first_loss=first_loss,
        steps=args.steps,
        peak_memory_bytes=memory,
        peak_memory_source=memory_source,
        compiled_memory_bytes=compiled_memory,
        parameters=counts,
        hlo=hlo_stats(compiled.as_text()) if args.hlo else None,
    )
    del state
    return record, tokens


def bench_peer(config: EncoderConfig, tokens: np.ndarray, args, ours: dict, compile: bool) -> dict:
    peer = peer_torch.time_simcse_step(
        config.to_hf_dict(),
        tokens,
        steps=args.steps,
        dtype=args.dtype,
        compile=compile,
        warmup=max(args.warmup, 3 if compile else 1),
        seed=args.seed,
    )
    peer.update(kind="peer_train_step", speedup_vs_peer=peer["step_ms"] / ours["step_ms"])
    return peer


# ----------------------------------------------------------------------------- inference timings


def load_tokenizer(path: Optional[str], workdir: str):
    """A tokenizer folder or vocab.txt; default: the generated tiny WordPiece vocab (offline)."""
    if path and os.path.isdir(path):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    if not path:
        path = os.path.join(workdir, "vocab.txt")
        tiny_data.write_tiny_vocab(path, tiny_data.write_tiny_corpus(os.path.join(workdir, "corpus.txt"), 500))
    return tiny_data.load_tiny_tokenizer(path)


def _embed_fn(config: EncoderConfig, tokenizer, args):
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the {args.preset} preset {config.vocab_size}")
    params = init_params(config, jax.random.key(args.seed))
    # SimCSE evaluates unsupervised models without the MLP head (mlp_only_train).
    return make_embed_fn(
        SentencePipeline(config, tokenizer, pooler="cls_before_pooler"),
        params,
        batch_size=args.eval_batch_size,
        dtype=jnp.dtype(args.dtype),
        attention_impl=args.attention_impl,
    )


def _cold_then_warm(fn) -> tuple[object, float, float]:
    """(result, first-run seconds (compiles every bucket shape), second-run seconds)."""
    start = time.perf_counter()
    fn()
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    result = fn()
    return result, cold_s, time.perf_counter() - start


def bench_sts(config: EncoderConfig, tokenizer, args) -> dict:
    embed = _embed_fn(config, tokenizer, args)
    suite = sts.load_suite(args.sts_dir, mode="test")
    results, cold_s, warm_s = _cold_then_warm(lambda: sts.evaluate_suite(embed, suite))
    sentences = len(sts.unique_sentences(suite))
    return dict(
        kind="sts_suite",
        sts_dir=str(args.sts_dir),
        tasks=[t.name for t in suite],
        sentences=sentences,
        seconds=warm_s,
        compile_s=max(cold_s - warm_s, 0.0),
        cold_s=cold_s,
        sentences_per_s=sentences / warm_s,
        shapes=len(embed.compiled_shapes),
        avg_spearman=results["avg"],
    )


def bench_encode(config: EncoderConfig, tokenizer, args, workdir: str) -> dict:
    sentences = tiny_data.write_tiny_corpus(os.path.join(workdir, "encode.txt"), args.encode, seed=args.seed + 1)
    embed = _embed_fn(config, tokenizer, args)
    embeddings, cold_s, warm_s = _cold_then_warm(lambda: embed(sentences))
    lengths = [len(ids) for ids in tokenizer(sentences)["input_ids"]]
    return dict(
        kind="encode",
        sentences=len(sentences),
        seconds=warm_s,
        sentences_per_s=len(sentences) / warm_s,
        compile_s=max(cold_s - warm_s, 0.0),
        cold_s=cold_s,
        shapes=len(embed.compiled_shapes),
        mean_tokens=float(np.mean(lengths)),
        max_tokens=int(np.max(lengths)),
        finite=bool(np.isfinite(embeddings).all()),
    )


# ----------------------------------------------------------------------------- report


def _size(num_bytes: Optional[int]) -> str:
    if num_bytes is None:
        return "-"
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.1f} MB"


def _peer_cell(peer: Optional[dict]) -> str:
    if peer is None:
        return "-"
    return f"{peer['step_ms']:.1f} ms, {_size(peer['peak_memory_bytes'])} ({peer['speedup_vs_peer']:.2f}x)"


def summary_table(records: Sequence[dict]) -> str:
    """Markdown: one row per measured batch, our step beside the peer's (speed-up = peer ms / ours)."""
    rows = [
        "| device | preset | dtype | attention (dropout) | batch | ours ms: pipelined / blocking | sentences/s "
        "| MFU | peak memory | compile s | torch eager (speed-up) | torch.compile (speed-up) |",
        "|---" * 12 + "|",
    ]
    for ours in (r for r in records if r["kind"] == "train_step"):
        peers = {
            p["compile"]: p
            for p in records
            if p["kind"] == "peer_train_step"
            and p["batch"] == ours["batch"]
            and p["time_utc"] == ours["time_utc"]
            and p["attention_impl"] == ours["attention_impl"]
        }
        rows.append(
            f"| {ours['device_kind']} | {ours['preset']} | {ours['dtype']} | {ours['attention_impl']} "
            f"({ours['attention_dropout']}) | {ours['batch']} | {ours['step_ms']:.2f} / "
            f"{ours['step_ms_blocking']:.2f} | {ours['sentences_per_s']:,.0f} | {100 * ours['mfu']:.1f} % | "
            f"{_size(ours['peak_memory_bytes'])} | {ours['compile_s']:.1f} | {_peer_cell(peers.get(False))} | "
            f"{_peer_cell(peers.get(True))} |"
        )
    for other in (r for r in records if r["kind"] in ("sts_suite", "encode")):
        rows.append(
            f"\n{other['kind']} ({other['device_kind']}, {other['preset']}, {other['dtype']}): "
            f"{other['sentences']} sentences in {other['seconds']:.2f} s after compilation "
            f"({other['sentences_per_s']:,.0f} sentences/s); compile {other['compile_s']:.1f} s, "
            f"{other['shapes']} shapes"
        )
    return "\n".join(rows)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m distilface_jax.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--batch-sizes", default="64,512", help="global batch sizes, comma-separated; '' = none")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--attention-impl", choices=("xla", "dot_product_attention"), default="xla")
    p.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="override the preset's 0.1; the fused attention kernel is only used at 0",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps per batch size (and per mode)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    p.add_argument("--peer", choices=("torch",), default=None, help="also time the PyTorch peer, same process")
    p.add_argument("--peer-compile", action="store_true", help="time the peer under torch.compile too")
    p.add_argument("--sts-dir", default=None, help="also time the 7-task STS test suite over this SentEval dir")
    p.add_argument(
        "--encode",
        type=int,
        nargs="?",
        const=10_000,
        default=0,
        help="also time encoding N synthetic sentences of mixed length (default N 10000)",
    )
    p.add_argument("--eval-batch-size", type=int, default=128, help="rows per batch for --sts-dir / --encode")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder or vocab.txt (default: generated tiny vocab)")
    p.add_argument("--no-hlo", dest="hlo", action="store_false", help="skip the HLO statistics of the step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="append the JSON lines to this file")
    p.add_argument(
        "--summarize",
        nargs="+",
        default=None,
        metavar="JSONL",
        help="measure nothing: print a markdown table of these result files",
    )
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def emit(record: dict, common: dict, output: Optional[str], records: list) -> None:
    line = dict(common, **record)
    records.append(line)
    text = json.dumps(line, default=str)
    print(text, flush=True)
    if output:
        with open(output, "a", encoding="utf-8") as f:
            f.write(text + "\n")


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    """Runs every requested measurement; returns the records it printed."""
    args = parse_args(argv)
    if args.summarize:
        records = [json.loads(line) for path in args.summarize for line in open(path, encoding="utf-8") if line.strip()]
        print(summary_table(records))
        return records
    config = PRESETS[args.preset]
    if args.attention_dropout is not None:
        config = config.replace(attention_dropout=args.attention_dropout)
    device = jax.local_devices()[0]
    peak_per_device = measure_peak_flops(device, peak_dtype(device, args.dtype))
    peak_flops = peak_per_device * jax.device_count()
    common = dict(
        preset=args.preset,
        seq_len=args.seq_len,
        dtype=args.dtype,
        attention_impl=args.attention_impl,
        attention_dropout=config.attention_dropout,
        **environment(),
        peak_tflops_per_device=peak_per_device / 1e12,
        peak_dtype=peak_dtype(device, args.dtype),
        time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    records: list[dict] = []
    mesh = sharding.make_mesh()
    for batch_size in sorted(args.batch_sizes):  # ascending: the process-wide memory peak is the latest's
        ours, tokens = bench_train(config, batch_size, args, mesh, peak_flops)
        emit(ours, common, args.output, records)
        if args.peer:
            for compile in (False, True) if args.peer_compile else (False,):
                emit(bench_peer(config, tokens, args, ours, compile), common, args.output, records)
    if args.sts_dir or args.encode:
        with tempfile.TemporaryDirectory() as workdir:
            tokenizer = load_tokenizer(args.tokenizer, workdir)
            if args.sts_dir:
                emit(bench_sts(config, tokenizer, args), common, args.output, records)
            if args.encode:
                emit(bench_encode(config, tokenizer, args, workdir), common, args.output, records)
    return records
