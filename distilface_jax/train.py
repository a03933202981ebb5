"""`python -m distilface_jax.train --config configs/X.py --workdir DIR [--config.key=value ...]`.

Trains a SimCSE sentence encoder data-parallel over every device of every process. Starting
on a workdir that holds a checkpoint resumes it; `--config.extend=True` continues a finished
run to a higher max_steps/num_epochs. Multi-host: on a Cloud TPU pod slice pass
--distributed=auto (launch/tpu_pod.sh does) so jax finds the other hosts; elsewhere pass
--coordinator_address HOST:PORT --num_processes N --process_id I
(launch/local_multiprocess.sh rehearses this on one machine).
Ctrl-C or SIGTERM: the state is saved at the end of the current step (rerun to resume);
a second Ctrl-C aborts at once, naming the step a rerun resumes from. A kill at any moment
leaves a workdir the rerun resumes (training/recovery.py); a refused run leaves it untouched.
Exit status: 0 done or preempted (SIGTERM); 130 stopped by Ctrl-C; 1 on a non-finite loss or
a config that contradicts the workdir's checkpoint; 2 on bad input (one line naming it).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from distilface_jax import run_folder
from distilface_jax.cli.policy import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    VERBOSITY_HELP,
    UsageError,
    configure_output,
    run_main,
)
from distilface_jax.config import key_help
from distilface_jax.config.base import base_config
from distilface_jax.training import distributed  # Registers the multi-host flags.

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run folder (local or gs://): checkpoints, metrics.jsonl, exports.")
config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py); override any key with --config.KEY=VALUE.", lock_config=True
)
_HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")
_OWN_FLAGS = (
    "workdir",
    "config",
    "verbosity",
    "coordinator_address",
    "num_processes",
    "process_id",
    "local_device_ids",
    "distributed",
)


def main(argv) -> int:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.workdir is None:
        raise UsageError("--workdir is required")
    # Imported here, not above: `--help` and usage errors answer before jax is imported.
    from distilface_jax.cli import checks

    checks.check_before_training(FLAGS.config, FLAGS.workdir)
    try:
        distributed.initialize_from_flags()  # Before anything touches a device.
    except ValueError as error:
        raise UsageError(str(error)) from None
    from distilface_jax import recipes
    from distilface_jax.training import resume, trainer

    try:
        # The config says which recipe (SimCSE, or distillation with a `distill` block); the loop is handed it.
        outcome = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, recipes.for_config(FLAGS.config))
    except (trainer.NonFiniteLossError, resume.ConfigMismatchError) as error:
        last = _last_checkpoint(FLAGS.workdir)
        print(f"error: {error}. Last good checkpoint: {last}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, OSError) as error:
        raise UsageError(str(error).strip("'\"")) from None
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (loading, the final test): nothing half done.
        print(
            f"interrupted; rerun the same command to resume (last checkpoint: {_last_checkpoint(FLAGS.workdir)})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if outcome.preempted:
        print(
            f"{'interrupted' if outcome.interrupted else 'preempted'}: saved the checkpoint of step "
            f"{outcome.final_step} in {FLAGS.workdir}; rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED if outcome.interrupted else 0
    print(f"done: {outcome.final_step} steps in {FLAGS.workdir}", file=sys.stderr)
    return 0


def _last_checkpoint(workdir: str) -> str:
    from distilface_jax.training import checkpoint

    try:
        step = checkpoint.RunCheckpoints(workdir, read_only=True).latest_step()
    except Exception:  # Reporting only: never mask the original error.
        step = None
    return "none" if step is None else f"step {step} in {workdir}/{run_folder.LATEST_DIR}"


def _config_path(argv: list[str]) -> str | None:
    for index, argument in enumerate(argv):
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
        if argument == "--config" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def _load_config_file(path: str):
    """get_config() of a config file, as ml_collections would load it; UsageError naming the path."""
    file = path.split(":", 1)[0] if not os.path.exists(path) else path
    if not os.path.isfile(file):
        raise UsageError(f"--config {path}: no such file")
    spec = importlib.util.spec_from_file_location("distilface_user_config", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.get_config()
    except Exception as error:
        raise UsageError(f"--config {path}: cannot load it ({type(error).__name__}: {error})") from None


def help_text(argv: list[str]) -> str:
    """Usage, the flags, and every config key with its default (the given --config's value) and meaning."""
    path = _config_path(argv)
    config = _load_config_file(path) if path else base_config()
    lines = [__doc__.strip(), "", "Flags:"]
    for name in _OWN_FLAGS:
        flag = FLAGS[name]
        default = "" if name == "config" else f" (default: {flag.default!r})"
        if name == "verbosity":
            lines.append(f"  -v, --verbosity  {VERBOSITY_HELP} (default: 0)")
            continue
        lines.append(f"  --{name}  {flag.help}{default}")
    source = f"{path}" if path else "the base recipe (distilface_jax/config/base.py); pass --config FILE for its values"
    lines += ["", f"Config keys (--config.KEY=VALUE), defaults from {source}:", key_help.describe(config)]
    return "\n".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with our help and one-line errors (exit 2) instead of tracebacks."""
    rest = argv[1:]
    if any(argument in _HELP_FLAGS for argument in rest):
        try:
            print(help_text(rest))
        except UsageError as error:
            _fail(str(error))
        sys.exit(0)
    path = _config_path(rest)
    if path is None:
        _fail("--config FILE is required (e.g. --config configs/tiny.py); --help lists the config keys")
    try:
        config = _load_config_file(path)
        defaults = dict(key_help.flat_items(config))
        for key, raw in key_help.overrides(rest):
            message = key_help.unknown_key_message(key, defaults) or key_help.value_message(key, raw, defaults.get(key))
            if message:
                raise UsageError(message)
    except UsageError as error:
        _fail(str(error))
    try:
        remaining = FLAGS(argv)
    except Exception as error:  # ml_collections wraps a bad value in several layers; keep the last.
        _fail(_innermost(error))
    verbosity = FLAGS.verbosity if FLAGS["verbosity"].present else 0
    configure_output(verbosity)
    return remaining


def _innermost(error: BaseException) -> str:
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    text = str(error).strip().strip("'\"").replace("\\n", " ").replace("\n", " ")
    return text or type(error).__name__


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(run_main(lambda: main(argv))), flags_parser=parse_flags)
