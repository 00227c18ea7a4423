"""Train and evaluate RetinaNet: a config in; checkpoints, metrics and TensorBoard logs out.

  python train.py --config=configs/shapes.py --workdir=/tmp/shapes
  python -m retinanet_jax train --config=configs/shapes.py --workdir=/tmp/shapes \
      --config.train_steps=100

Run the same command again to resume from the workdir's newest readable checkpoint.
Multi-host: run the same command on every host with --coordinator_address=HOST0:PORT
--num_processes=N --process_id=I (or the JAX_* environment variables; a SLURM job step of
several tasks is detected). Every process reads its own share of the data; process 0 writes
logs and metrics.

Exit status: 0 done; 1 bad input or a fault it cannot go past (one line says which); 143 / 130
after a SIGTERM / SIGINT, once a checkpoint of the step reached is saved (run the same command
to resume).
"""

import sys

from absl import flags

from retinanet_jax.commands import command

TAKES_CONFIG = True


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        'workdir', None, 'directory for checkpoints, logs and metrics', flag_values=fv
    )
    flags.DEFINE_string(
        'coordinator_address',
        None,
        'multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS)',
        flag_values=fv,
    )
    flags.DEFINE_integer(
        'num_processes', None, 'multi-host: process count (or JAX_NUM_PROCESSES)', flag_values=fv
    )
    flags.DEFINE_integer(
        'process_id',
        None,
        'multi-host: this process, 0-based (or JAX_PROCESS_ID)',
        flag_values=fv,
    )
    command.define_cache_flag(fv)
    flags.mark_flags_as_required(['config', 'workdir'], flag_values=fv)


def main(f: flags.FlagValues) -> int:
    # JAX and the package load here, after the flags and --config parsed (a bad one is then
    # named in a fraction of a second).
    import jax

    from retinanet_jax import sharding
    from retinanet_jax.training import preemption, trainer

    jax.config.update('jax_threefry_partitionable', True)
    sharding.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
    try:
        trainer.train_and_evaluate(f.config, f.workdir)
    except preemption.Preempted as e:  # a checkpoint of the step reached is saved
        print(f'train: {e}', file=sys.stderr, flush=True)
        return e.exit_code
    return 0
