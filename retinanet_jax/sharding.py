"""Device mesh and shardings: one ('data',) axis over every device of every process.

Parameters and optimizer state are replicated; batches are split along their first axis.
Host batches (numpy, this process's share) become global arrays with
`jax.make_array_from_process_local_data`.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from retinanet_jax.errors import UserError

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
        raise UserError(
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

    local = multihost_utils.global_array_to_host_local_array(tree, mesh, PartitionSpec(DATA))
    return jax.tree.map(np.asarray, local)


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every process's rows [n_p, ...] (any n_p, zero included), concatenated in process order,
    on every process; one process: `rows` itself."""
    rows = np.asarray(rows)
    if jax.process_count() == 1:
        return rows
    counts = multihost_utils.process_allgather(np.array(len(rows)))
    padded = np.zeros((int(counts.max()), *rows.shape[1:]), rows.dtype)
    padded[: len(rows)] = rows
    everyone = multihost_utils.process_allgather(padded)
    return np.concatenate([r[:n] for r, n in zip(everyone, counts, strict=True)])


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts a multi-process (multi-host) JAX run; call once, before anything touches devices.

    Each argument falls back to the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
    JAX_PROCESS_ID). Inside a SLURM job step of several tasks (`srun -n N python train.py ...`)
    JAX finds all three itself. Nothing is started when neither an address nor such a job step
    is found, so the same command runs on one machine (a one-task SLURM allocation included).
    On CPUs the processes talk through gloo.
    """

    address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
    num = num_processes or _int_env('JAX_NUM_PROCESSES')
    pid = process_id if process_id is not None else _int_env('JAX_PROCESS_ID')
    slurm = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID', 'SLURM_LOCALID')
    cluster = all(v in os.environ for v in slurm) and (_int_env('SLURM_NTASKS') or 1) > 1
    if address is None and not cluster:
        if num not in (None, 1) or pid not in (None, 0):
            raise UserError(
                f'num_processes={num} / process_id={pid} given without a coordinator '
                'address (--coordinator_address or JAX_COORDINATOR_ADDRESS)'
            )
        return
    if num is not None and pid is not None and not 0 <= pid < num:
        raise UserError(f'process_id must be in [0, {num}), got {pid}')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # used by CPU devices only
    jax.distributed.initialize(address, num, pid)


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f'environment variable {name} must be an integer, got {value!r}') from None
