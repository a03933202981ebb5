"""`train_and_evaluate(config, workdir, recipe=None)`: the training loop around a recipe's jitted
step (`recipe.py`: SimCSE by default, distillation handed in by `train.py`).

The loop never waits on the device between logs: step outputs stay on device until a log,
eval, checkpoint or the end needs them (a per-step sync nearly doubles a small step's time on
a GPU). Every saved state has been checked finite first, so a NaN never reaches a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from distilface_jax import run_folder, run_record
from distilface_jax.config import keys
from distilface_jax.config.keys import Config
from distilface_jax.evaluation import sts
from distilface_jax.evaluation.inference import make_embed_fn
from distilface_jax.models.sentence_pipeline import SentencePipeline
from distilface_jax.training import (
    checkpoint,
    corpus,
    data,
    mixture,
    prefetch,
    profiling,
    recovery,
    resume,
    sharding,
    store_data,
    tiny_data,
)
from distilface_jax.training.interrupts import EXIT_INTERRUPTED, StopSignals, exit_now
from distilface_jax.training.metrics import MetricsWriter, json_value, read_metrics
from distilface_jax.training.optimizer import OptimizerSettings, make_optimizer
from distilface_jax.training.progress import StepProgress
from distilface_jax.training.recipe import Recipe
from distilface_jax.training.simcse import SimCSE
from distilface_jax.training.state import create_train_state, state_shardings

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


@dataclasses.dataclass
class Outcome:
    final_step: int
    preempted: bool = False  # stopped early by SIGTERM or Ctrl-C, state saved
    interrupted: bool = False  # the stop was a Ctrl-C (exit status 130)
    best_step: Optional[int] = None
    best_dev: Optional[float] = None
    test_results: Optional[dict] = None


def load_train_data(config: Config, tokenizer, workdir: str) -> data.TrainData | store_data.StoreData:
    """The run's training data, read and tokenized; the in-memory path's token cache is only read
    here (the run writes it with `data.write_cache` once it knows it goes ahead)."""
    train_file = tiny_data.resolve_builtin(config.data.train_file, workdir, "corpus")
    cache_dir = config.data.cache_dir or run_folder.default_cache_dir(workdir)
    # A local list, glob or .mixture.json is a mixture read in memory (deduplicated, weighted:
    # mixture.py); with the token store, a list or glob is its files concatenated, as before.
    if config.data.token_store or (corpus.is_many(train_file) and not mixture.is_mixture(train_file)):
        if train_file.endswith(mixture.MIXTURE_SUFFIX):
            raise ValueError(
                f"config.data.train_file={train_file}: a .mixture.json is read in memory; "
                "config.data.token_store=True does not read mixtures (weights, caps, dedup) yet"
            )
        return _load_store(config, tokenizer, train_file, cache_dir)
    loader = {"unsup": data.load_unsupervised, "sup": data.load_supervised}.get(config.data.format)
    if loader is None:
        raise ValueError(f"config.data.format must be 'unsup' or 'sup', got {config.data.format!r}")
    return loader(
        train_file,
        tokenizer,
        global_batch_size=config.batch_size,
        seed=config.seed,
        max_seq_length=config.data.max_seq_length,
        cache_dir=cache_dir,
        write_cache=False,
    )


def _load_store(config, tokenizer, train_file: str, cache_dir) -> store_data.StoreData:
    """The token store's data: this host tokenizes its share of the shards, reads its rows."""
    if not cache_dir or run_folder.is_remote(cache_dir):
        raise ValueError(
            "the token store needs a local --config.data.cache_dir (a bucket workdir has no local cache; "
            "put the store itself in the bucket with --config.data.store_dir=gs://...)"
        )
    return store_data.load_store_data(
        train_file,
        tokenizer,
        fmt=config.data.format,
        global_batch_size=config.batch_size,
        seed=config.seed,
        max_seq_length=config.data.max_seq_length,
        cache_dir=cache_dir,
        store_dir=config.data.store_dir,
        num_workers=config.data.num_workers,
        shard_bytes=config.data.store_shard_bytes,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


class _Evaluator:
    """STS evaluation of the current params on this process's first device."""

    def __init__(self, config: Config, pipeline: SentencePipeline, workdir: str):
        self.sts_dir = tiny_data.resolve_builtin(config.eval.sts_dir, workdir, "sts")
        self.pipeline = pipeline  # What the run's record says to embed with: dev scores the exported model.
        self.batch_size = config.eval.batch_size
        self.dev_suite = sts.load_suite(self.sts_dir, mode="dev") if config.eval_every > 0 else None

    def run(self, params, suite, progress=None, what: str = "") -> dict:
        if progress is not None:
            progress.write(f"{what}: evaluating {len(suite)} tasks ...")
        start = time.perf_counter()
        results = self._run(params, suite)
        if progress is not None:
            scores = "  ".join(f"{task.name} {results[task.name]:.2f}" for task in suite)
            progress.write(f"{what}: {scores}  avg {results['avg']:.2f}  ({time.perf_counter() - start:.0f} s)")
        return results

    def _run(self, params, suite) -> dict:
        embed = make_embed_fn(self.pipeline, sharding.local_copy(params), batch_size=self.batch_size)
        return sts.evaluate_suite(embed, suite)


def _fetch(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Device metrics → host floats, checking that every loss and gradient norm is finite."""
    fetched = jax.device_get(pending)
    for step, metrics in fetched:
        for key in ("loss", "gradient_norm"):
            if not math.isfinite(float(metrics[key])):
                raise NonFiniteLossError(f"{key} is {float(metrics[key])} at step {step}")
    return fetched


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


def _check_params_finite(state, step: int) -> None:
    """A finite loss and gradient do not prove a finite update (an optimizer overflow does not
    show in either), so the parameters themselves are checked before they are saved."""
    if not bool(_all_finite(state.params)):
        raise NonFiniteLossError(f"parameters are not finite after step {step}")


def _summarise(fetched: list[tuple[int, dict]], timed_steps: int, seconds: float, batch_size: int) -> dict:
    keys = fetched[-1][1].keys()
    summary = {key: float(np.mean([float(m[key]) for _, m in fetched])) for key in keys}
    summary["learning_rate"] = float(fetched[-1][1]["learning_rate"])
    # None for a window holding only the compiling first step: it has no throughput to report.
    summary["sentences_per_second"] = timed_steps * batch_size / max(seconds, 1e-9) if timed_steps else None
    return summary


def default_recipe(config: Config) -> Recipe:
    """SimCSE, for a SimCSE config; any other recipe is handed to the loop by its caller."""
    name = keys.recipe_name(config)
    if name != SimCSE.name:
        raise ValueError(f"a {name} config: pass its recipe to train_and_evaluate (distilface_jax.recipes.for_config)")
    return SimCSE()


def train_and_evaluate(config: Config, workdir: str, recipe: Optional[Recipe] = None) -> Outcome:
    """Trains `recipe` (default: SimCSE) as `config` says, in `workdir`, resuming its checkpoint."""
    recipe = recipe or default_recipe(config)
    workdir = run_folder.absolute(workdir)
    is_main = jax.process_index() == 0
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    previous = resume.previous_run(workdir)
    if previous is not None:  # Another recipe or a contradicting config: refused before any work.
        resume.check_config(previous, config)
    initial = recipe.initial_model(config, workdir)
    encoder_config, params, tokenizer = initial.encoder_config, initial.params, initial.tokenizer
    train_data = load_train_data(config, tokenizer, workdir)  # Read; its token cache is written below.
    total_steps = config.max_steps if config.max_steps > 0 else config.num_epochs * train_data.steps_per_epoch
    saved_total = previous.meta.get("total_steps") if previous is not None else None
    if previous is not None:  # The loaded model's shape and the data's length: still nothing written.
        resume.check_config(
            previous,
            config,
            checkpoint_has_mlp=initial.checkpoint_has_mlp,
            encoder_config=encoder_config.to_hf_dict(),
        )
        # A changed mixture first: it may change the length too, and `extend` would not make it right.
        resume.check_mixture(workdir, getattr(train_data, "mixture_record", None), previous.source)
        if saved_total is not None and saved_total != total_steps:
            resume.check_extension(config, saved_total, total_steps, previous.step)

    # ---------------------------------------------------------------- the run goes ahead: writes
    start = previous.step if previous is not None else 0
    unfinished = recovery.unfinished_saves(workdir)  # Before Orbax deletes them unannounced.
    runs = checkpoint.RunCheckpoints(workdir, keep=config.keep_checkpoints)
    best_step = _repair(runs, workdir, previous, unfinished, is_main, config.data.cache_dir)
    if isinstance(train_data, data.TrainData):
        data.write_cache(train_data)
    if train_data.num_skipped_lines and is_main:
        logger.info("skipped %d empty lines of %s", train_data.num_skipped_lines, config.data.train_file)
    record = getattr(train_data, "mixture_record", None)
    if record is not None and is_main:  # What the mixture gave, per source: WORKDIR/mixture.json and the log.
        run_folder.write_text(run_folder.path(workdir, run_folder.MIXTURE_FILE), json.dumps(record, indent=1) + "\n")
        for line in mixture.summary_lines(record):
            logger.info("%s", line)
    if is_main:
        run_record.write_recipe_record(workdir, recipe.records(config))
    train_data = recipe.attach(train_data, config, workdir)
    if previous is None and is_main:
        run_record.save_run_description(workdir, config, encoder_config, tokenizer)
    optimizer, schedule = make_optimizer(OptimizerSettings.from_config(config), total_steps)
    replicated = sharding.replicated(mesh)
    state = create_train_state(params, optimizer, config.seed, replicated)
    del params
    initial.params = None  # The state holds them now; no second host copy.
    evaluator = _Evaluator(config, recipe.eval_pipeline(config, initial), workdir)
    best_dev = -math.inf
    if previous is not None:
        state = runs.restore_state(start, checkpoint.abstract_like(state, replicated))
        if best_step is not None:  # The best dev score so far: a later, lower one must not replace it.
            best_dev = runs.read_meta(best_step, best=True)["dev"]["STSBenchmark"]
    if is_main:
        run_record.write_run_info(workdir, config, int(mesh.devices.size), total_steps, start, saved_total)

    step_fn = recipe.make_step(
        config, initial, train_data, mesh, optimizer, schedule, state_shardings(state, replicated)
    )
    writer = MetricsWriter(workdir, enabled=is_main)
    meta_base = {"config": config.to_dict(), "encoder_config": encoder_config.to_hf_dict(), "total_steps": total_steps}
    flag = StopSignals(abort=lambda: _abort(workdir))
    progress = StepProgress(start, total_steps, enabled=is_main)
    profiler = profiling.StepProfiler(
        profiling.parse_window(config.profile_steps),
        str(run_folder.path(workdir, run_folder.PROFILE_DIR)),
        enabled=is_main,
    )
    pending: list[tuple[int, dict]] = []
    window_start, timed_steps = time.perf_counter(), 0
    outcome = Outcome(final_step=start)
    batches = prefetch.Batches(
        lambda s: train_data.batch(s, jax.process_index(), jax.process_count()),
        start,
        total_steps,
        config.data.prefetch,
    )
    try:
        for step in range(start, total_steps):
            _, host_batch, wait_ms = batches.next()
            batch = sharding.global_batch(host_batch, mesh)
            with profiler.step(step):
                state, metrics = step_fn(state, batch)
            profiler.after_step(step, metrics)
            pending.append((step + 1, dict(metrics, data_wait_ms=wait_ms)))  # the host's wait for this batch
            done = step + 1
            timed_steps += 1
            progress.dispatched(done, metrics)
            if step == start:  # The first step compiles: one wait, so throughput excludes compile time.
                jax.block_until_ready(metrics)
                window_start, timed_steps = time.perf_counter(), 0
            preempted = _preempted(flag, runs, done)
            evaluate_now = config.eval_every > 0 and (done % config.eval_every == 0 or done == total_steps)
            save_now = done % config.checkpoint_every == 0 or done == total_steps or preempted
            if done % config.log_every == 0 or evaluate_now or save_now:
                fetched = _fetch(pending)  # Raises before anything non-finite can be saved.
                pending.clear()
                summary = _summarise(fetched, timed_steps, time.perf_counter() - window_start, config.batch_size)
                writer.write(done, summary, prefix="train/")
                progress.finished(done)
                progress.show(summary["loss"], summary["sentences_per_second"])
                window_start, timed_steps = time.perf_counter(), 0
            if evaluate_now:
                dev = evaluator.run(state.params, evaluator.dev_suite, progress, f"step {done}, dev")
                dev_scores = {key: dev[key] for key in ("STSBenchmark", "SICKRelatedness", "avg")}
                writer.write(done, {"split": "dev", **dev_scores}, prefix="dev/")
                if dev["STSBenchmark"] > best_dev:
                    best_step, best_dev = done, dev["STSBenchmark"]
                    runs.save_best(done, state.params, dict(meta_base, step=done, dev=dev_scores))
                window_start, timed_steps = time.perf_counter(), 0  # Evaluation is not training throughput.
            if save_now:
                _check_params_finite(state, done)
                runs.save(state, dict(meta_base, step=done, best_step=best_step, best_dev=best_dev))
            outcome.final_step = done
            if preempted:
                outcome.preempted, outcome.interrupted = True, flag.interrupted
                break
    finally:
        batches.close()
        _log_rows_read(train_data)
        profiler.stop()
        runs.wait()  # An async save of a good state in flight must finish, whatever happened.
        flag.restore()
        progress.close()
    outcome.best_step, outcome.best_dev = best_step, (best_dev if best_step is not None else None)
    # Rerunning a finished run (e.g. a repeated launch) must not evaluate and log the test twice.
    # Its row is written after sts_test.json, so a row of this step means both are there.
    already_tested = start >= total_steps and any(
        r.get("split") == "test" and r.get("step") == start for r in read_metrics(workdir)
    )
    if not outcome.preempted and config.eval.final_test and not already_tested:
        final_params = (
            state.params
            if best_step is None
            else runs.restore_params(best_step, checkpoint.abstract_like(state.params, replicated), best=True)
        )
        outcome.test_results = _final_test(
            evaluator,
            final_params,
            writer,
            workdir,
            outcome.final_step,
            best_step or outcome.final_step,
            best=best_step is not None,
        )
    writer.close()
    runs.close()
    return outcome


def _repair(runs, workdir: str, previous, unfinished: list[str], is_main: bool, cache_dir: str) -> Optional[int]:
    """Removes what an interrupted run left past (or superseded by) the checkpoint this run
    resumes from, and says so in one line (recovery.py has the order of writes that makes
    this enough). Returns the best step the resumed run starts with. Every process calls it:
    Orbax deletes best steps collectively."""
    start = previous.step if previous is not None else None
    recorded_best = recovery.recorded_best(previous, runs.best.all_steps())
    best_deleted = recovery.repair_best(runs, start, recorded_best)
    missing_best = recorded_best is not None and recorded_best not in runs.best.all_steps()
    if is_main:
        dropped, torn = recovery.rewind_metrics(workdir, start or 0)
        token_cache = cache_dir or run_folder.default_cache_dir(workdir)
        temporaries = recovery.remove_stray_temporaries(workdir, token_cache) if jax.process_count() == 1 else []
        line = recovery.describe(
            workdir,
            start,
            best_deleted=best_deleted,
            missing_best=recorded_best if missing_best else None,
            metrics_dropped=dropped,
            torn_line=torn,
            unfinished=unfinished,
            temporaries=temporaries,
        )
        if line or start is not None:
            logger.info(line or f"resuming from step {start} of {workdir}")
    return None if missing_best else recorded_best


def _final_test(evaluator, params, writer, workdir: str, step: int, evaluated_step: int, *, best: bool) -> dict:
    """The 7-task STS test of `params`: logged, written to sts_test.json and printed (process 0)."""
    label = "best step" if best else "step"
    if jax.process_index() == 0:
        print(f"test of {label} {evaluated_step}: evaluating 7 tasks ...", file=sys.stderr, flush=True)
    results = evaluator.run(params, sts.load_suite(evaluator.sts_dir, mode="test"))
    if jax.process_index() == 0:  # The file first: its metrics row then says both are written.
        run_folder.write_text(
            run_folder.path(workdir, run_folder.STS_TEST_FILE),
            json.dumps(json_value(results), indent=2, allow_nan=False),
        )
    writer.write(
        step,
        {
            "split": "test",
            "evaluated_step": evaluated_step,
            **{key: value for key, value in results.items() if key != "details"},
        },
    )
    if jax.process_index() == 0:
        print(sts.format_table(results, title=f"STS test, {label} {evaluated_step}"), flush=True)
    return results


def _abort(workdir: str) -> None:
    """A second Ctrl-C: one line, then out at once (a kill the workdir is built to survive)."""
    step = recovery.committed_step(workdir)
    resumes = f"step {step}" if step is not None else "the start (no checkpoint yet)"
    exit_now(f"aborted: a second Ctrl-C; rerun the same command to resume from {resumes}", EXIT_INTERRUPTED)


def _log_rows_read(train_data) -> None:
    """Each process names the rows it read from the token store (only its slice of each batch)."""
    if isinstance(train_data, store_data.StoreData):
        logger.info(
            "token store: process %d read %d rows of %d",
            jax.process_index(),
            train_data.store.rows_read,
            train_data.num_examples,
        )


def _preempted(flag: StopSignals, runs: checkpoint.RunCheckpoints, step: int) -> bool:
    if jax.process_count() > 1:
        # All hosts must agree on the step to stop at, or their collective save deadlocks:
        # Orbax's preemption sync point gives every host the same answer.
        return runs.latest.reached_preemption(step)
    return flag.received is not None
