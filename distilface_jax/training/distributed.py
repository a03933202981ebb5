"""Multi-process start-up: when, and how, to call `jax.distributed.initialize`.

    python -m distilface_jax.train ... --coordinator_address=10.0.0.2:8476 --num_processes=4 --process_id=1

Importing this module registers the absl flags below; `distilface_jax.train` calls
`initialize_from_flags()` after flag parsing and before anything touches a device (jax refuses
to initialize once a backend exists). Three situations:

- explicit flags (`--coordinator_address`, `--num_processes`, `--process_id`, all three):
  any cluster, e.g. `launch/local_multiprocess.sh` rehearsing multi-host on one CPU machine;
- a multi-host Cloud TPU slice: `jax.distributed.initialize()` with no arguments, jax reads
  the slice's workers itself. GKE and multislice runs advertise the slice in environment
  variables, which we detect; a plain Cloud TPU VM slice (queued resources, `tpu-vm create`)
  publishes it only in the GCE metadata server, so `launch/tpu_pod.sh` passes
  `--distributed=auto` instead of us querying the network from a pure function;
- anything else (a laptop, one GPU, a single-host TPU VM): no call at all, jax runs as one process.

`distributed_settings` decides, without side effects, so it is unit-tested directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
from absl import flags

logger = logging.getLogger(__name__)

_EXPLICIT = ("coordinator_address", "num_processes", "process_id")
MODES = ("detect", "auto", "off")


def _define_once(define, name: str, *args, **kwargs) -> None:
    # Importing the module twice (a reload, or a copy under another name) must not raise
    # absl's DuplicateFlagError.
    if name not in flags.FLAGS:
        define(name, *args, **kwargs)


def _define_flags() -> None:
    _define_once(
        flags.DEFINE_string,
        "coordinator_address",
        None,
        "HOST:PORT of process 0's coordinator service; reachable from every process. "
        "Give it with --num_processes and --process_id.",
    )
    _define_once(flags.DEFINE_integer, "num_processes", None, "Number of processes in the job (>= 1).")
    _define_once(flags.DEFINE_integer, "process_id", None, "This process's id, 0 <= id < --num_processes.")
    _define_once(
        flags.DEFINE_list,
        "local_device_ids",
        None,
        "Comma-separated local device ids this process may use (default: all of them).",
    )
    _define_once(
        flags.DEFINE_enum,
        "distributed",
        "detect",
        list(MODES),
        "detect: explicit flags, else a multi-host TPU slice seen in the environment, "
        "else one process. auto: always jax.distributed.initialize() and let jax find the "
        "cluster (Cloud TPU VM slices, Slurm, Open MPI). off: never initialize.",
    )


_define_flags()

_initialized_here = False  # Set once our call succeeded; jax.distributed.is_initialized() covers others.


def _env_list(environ: Mapping[str, str], name: str) -> list[str]:
    return [item for item in environ.get(name, "").split(",") if item.strip()]


def tpu_slice_in_environment(environ: Mapping[str, str]) -> str | None:
    """Why we believe this process is one of several TPU hosts, or None.

    Mirrors what jax's own cluster detection reads (jax/_src/clusters/cloud_tpu_cluster.py):
    GKE sets TPU_WORKER_HOSTNAMES (or TPU_PROCESS_ADDRESSES) to every host of the slice and
    TPU_WORKER_ID to this one; multislice jobs set MEGASCALE_*. One hostname means a single-host
    slice, where jax needs no initialize. CLOUD_TPU_TASK_ID alone is not evidence: it is also set
    to split one host's chips among local processes.
    """
    for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):
        hosts = _env_list(environ, name)
        if len(hosts) > 1:
            return f"{name} lists {len(hosts)} hosts"
        if hosts:
            break  # jax prefers TPU_PROCESS_ADDRESSES; a single entry there means one host.
    slices = environ.get("MEGASCALE_NUM_SLICES", "").strip()
    if slices.isdigit() and int(slices) > 1:
        return f"MEGASCALE_NUM_SLICES={slices}"
    if environ.get("MEGASCALE_COORDINATOR_ADDRESS", "").strip():
        return "MEGASCALE_COORDINATOR_ADDRESS is set"
    return None


def _check_address(address: str) -> str:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"--coordinator_address={address!r} must be HOST:PORT with a port in 1..65535 "
            "(e.g. 10.0.0.2:8476, or 127.0.0.1:PORT for local processes)"
        )
    return address.strip()


def _device_ids(raw: Any) -> list[int] | None:
    if raw is None or raw == [] or raw == "":
        return None
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    try:
        ids = [int(str(item).strip()) for item in items]
    except ValueError:
        raise ValueError(f"--local_device_ids={raw!r} must be comma-separated integers") from None
    if any(i < 0 for i in ids):
        raise ValueError(f"--local_device_ids={raw!r} must be non-negative")
    return ids


def _explicit_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """All three flags, validated, as `jax.distributed.initialize` keyword arguments."""
    missing = [f"--{name}" for name in _EXPLICIT if values.get(name) is None]
    if missing:
        given = [f"--{name}" for name in _EXPLICIT if values.get(name) is not None]
        raise ValueError(
            f"{', '.join(given)} given without {', '.join(missing)}: a multi-process run needs "
            "--coordinator_address, --num_processes and --process_id together"
        )
    num_processes, process_id = int(values["num_processes"]), int(values["process_id"])
    if num_processes < 1:
        raise ValueError(f"--num_processes={num_processes} must be >= 1")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must satisfy 0 <= process_id < --num_processes={num_processes}")
    return dict(
        coordinator_address=_check_address(str(values["coordinator_address"])),
        num_processes=num_processes,
        process_id=process_id,
    )


def distributed_settings(flag_values: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Keyword arguments for `jax.distributed.initialize`, or None for a single process.

    `flag_values` maps flag names (coordinator_address, num_processes, process_id,
    local_device_ids, distributed) to values, None when not given. An empty dict means
    "initialize with no arguments": jax auto-detects the cluster. Raises ValueError naming
    the offending flag on inconsistent flags.
    """
    mode = flag_values.get("distributed") or "detect"
    if mode not in MODES:
        raise ValueError(f"--distributed={mode!r} must be one of {', '.join(MODES)}")
    explicit = any(flag_values.get(name) is not None for name in _EXPLICIT)
    device_ids = _device_ids(flag_values.get("local_device_ids"))
    if mode == "off":
        if explicit or device_ids is not None:
            raise ValueError(
                "--distributed=off contradicts --coordinator_address/--num_processes/"
                "--process_id/--local_device_ids; drop one or the other"
            )
        return None

    if explicit:
        settings = _explicit_settings(flag_values)
    elif mode == "auto" or tpu_slice_in_environment(environ):
        settings = {}
    elif device_ids is not None:
        raise ValueError(
            "--local_device_ids needs --coordinator_address, --num_processes and "
            "--process_id (or --distributed=auto on a cluster jax detects)"
        )
    else:
        return None
    if device_ids is not None:
        settings["local_device_ids"] = device_ids
    return settings


def _flag_values() -> dict[str, Any]:
    names = _EXPLICIT + ("local_device_ids", "distributed")
    return {name: flags.FLAGS[name].value for name in names}


def initialize_from_flags(environ: Mapping[str, str] | None = None) -> bool:
    """Calls `jax.distributed.initialize` once if this run is multi-process; True if it did.

    Must run after absl parsed the flags and before any jax computation or device query.
    A second call, or a call after someone else initialized, does nothing.
    """
    global _initialized_here
    if _initialized_here or jax.distributed.is_initialized():
        return False
    settings = distributed_settings(_flag_values(), os.environ if environ is None else environ)
    if settings is None:
        return False
    how = ", ".join(f"{key}={value}" for key, value in settings.items()) or "cluster auto-detected"
    logger.info("jax.distributed.initialize(%s)", how)
    try:
        jax.distributed.initialize(**settings)
    except ValueError as error:
        if settings:
            raise
        # jax's own message ("coordinator_address should be defined") does not say why we asked.
        raise RuntimeError(
            "jax.distributed.initialize() found no cluster to join; on a single machine drop "
            "--distributed=auto, or pass --coordinator_address/--num_processes/--process_id"
        ) from error
    _initialized_here = True
    # No device counts here: querying devices would create the backend before the caller's
    # own jax.config settings (platforms, compilation cache) take effect.
    return True


def is_main_process() -> bool:
    """True on process 0, the one that writes logs, metrics and exports."""
    return jax.process_index() == 0
