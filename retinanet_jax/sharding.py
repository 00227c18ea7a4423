"""Device mesh and shardings: one ('data',) axis over every device of every process.

Parameters and optimizer state are replicated; batches are split along their first axis.
Host batches (numpy, this process's share) become global arrays with
`jax.make_array_from_process_local_data`.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = 'data'


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA))


def local_batch_size(global_batch_size: int) -> int:
    """This process's share of the global batch; a clear error if it does not divide."""
    devices, processes = jax.device_count(), jax.process_count()
    if global_batch_size % devices:
        raise ValueError(
            f'batch size {global_batch_size} is not divisible by the number of devices '
            f'({devices}); choose a multiple of {devices}'
        )
    return global_batch_size // processes


def to_global(batch: dict, mesh: Mesh) -> dict:
    """Numpy host batch (this process's rows) -> global jax arrays split over 'data'."""
    sharding = batch_sharded(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def to_local(tree, mesh: Mesh):
    """Global arrays split over 'data' -> this process's rows, as numpy."""
    from jax.experimental import multihost_utils

    local = multihost_utils.global_array_to_host_local_array(tree, mesh, PartitionSpec(DATA))
    return jax.tree.map(np.asarray, local)
