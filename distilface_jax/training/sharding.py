"""The device mesh and how arrays are laid on it: data-parallel over one `data` axis.

The mesh spans every device of every process (`jax.devices()`), so the same code runs on one
CPU, 8 simulated devices, or a multi-host TPU pod. Parameters are replicated; batches are
split along their first (example) axis.
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise ValueError(f"batch_size {global_batch_size} is not divisible by the {devices} devices of the mesh")


def global_batch(host_arrays: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows → one global array per key, sharded over all processes' devices.

    Each process passes only its own contiguous slice (`TrainData.batch(step, process_index,
    process_count)`); `make_array_from_process_local_data` stitches them without any host
    seeing the whole batch.
    """
    sharding = batch_sharded(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, array) for name, array in host_arrays.items()}


def local_copy(tree):
    """One replica of a replicated tree on this process's first device (for host-local work
    such as evaluation, which then needs no cross-host communication)."""
    return jax.tree_util.tree_map(lambda array: array.addressable_data(0), tree)
