"""`python -m distilface_jax.train --config configs/X.py --workdir DIR [--config.key=value ...]`.

Trains a SimCSE sentence encoder data-parallel over every device of every process. Starting
on a workdir that holds a checkpoint resumes it. Multi-host: on a Cloud TPU pod slice pass
--distributed=auto (launch/tpu_pod.sh does) so jax finds the other hosts; elsewhere pass
--coordinator_address HOST:PORT --num_processes N --process_id I
(launch/local_multiprocess.sh rehearses this on one machine).
Exit status: 0 done or preempted (SIGTERM: saved, rerun to resume); 1 on a non-finite loss
or a config that contradicts the workdir's checkpoint; 2 on bad input.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from distilface_jax import distributed  # Registers the multi-host flags.

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run folder (local or gs://): checkpoints, metrics.jsonl, exports.")
flags.mark_flag_as_required("workdir")
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.mark_flag_as_required("config")


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags()  # Before anything touches a device.
    # Orbax logs every save at INFO through absl; keep those quiet and our own messages visible.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("distilface_jax").setLevel(logging.INFO)
    from distilface_jax import trainer

    try:
        outcome = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (trainer.NonFiniteLossError, trainer.ConfigMismatchError) as error:
        last = _last_checkpoint(FLAGS.workdir)
        print(f"error: {error}. Last good checkpoint: {last}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if outcome.preempted:
        print(f"preempted: saved the checkpoint of step {outcome.final_step} in {FLAGS.workdir}; "
              "rerun the same command to resume", file=sys.stderr)
    else:
        print(f"done: {outcome.final_step} steps in {FLAGS.workdir}", file=sys.stderr)
    return 0


def _last_checkpoint(workdir: str) -> str:
    from distilface_jax import checkpoint
    try:
        step = checkpoint.RunCheckpoints(workdir, read_only=True).latest_step()
    except Exception:  # Reporting only: never mask the original error.
        step = None
    return "none" if step is None else f"step {step} in {workdir}/{checkpoint.LATEST_DIR}"


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
