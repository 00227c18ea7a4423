"""Train and evaluate RetinaNet: flags and config in, `train_lib.train_and_evaluate` out.

python train.py --config=configs/shapes.py --workdir=/tmp/shapes
python train.py --config=configs/shapes.py --workdir=/tmp/shapes --config.train_steps=100

Multi-host: run the same command on every host with --coordinator_address=HOST0:PORT
--num_processes=N --process_id=I (or the JAX_* environment variables; a SLURM job step of
several tasks is detected). Every process reads its own share of the data; process 0 writes
logs and metrics.

Exit status: 0 done; 1 bad input or a fault it cannot go past (one line says which); 143 / 130
after a SIGTERM / SIGINT, once a checkpoint of the step reached is saved (run the same command
to resume).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from retinanet_jax.commands import cli

config_flags.DEFINE_config_file('config', None, 'path to a configs/*.py file', lock_config=True)
flags.DEFINE_string('workdir', None, 'directory for checkpoints, logs and metrics')
flags.DEFINE_string(
    'coordinator_address', None, 'multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS)'
)
flags.DEFINE_integer('num_processes', None, 'multi-host: process count (or JAX_NUM_PROCESSES)')
flags.DEFINE_integer('process_id', None, 'multi-host: this process, 0-based (or JAX_PROCESS_ID)')
cli.define_cache_flag()
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    # JAX and the package load here, after the flags and --config parsed (a bad one is then
    # named in a fraction of a second).
    import jax

    from retinanet_jax import sharding
    from retinanet_jax.training import preemption
    from retinanet_jax.training import trainer as train_lib

    cli.start()
    jax.config.update('jax_threefry_partitionable', True)
    f = flags.FLAGS
    cli.exit_on_bad_input(
        'train.py',
        sharding.initialize_distributed,
        f.coordinator_address,
        f.num_processes,
        f.process_id,
    )
    try:
        cli.exit_on_bad_input('train.py', train_lib.train_and_evaluate, f.config, f.workdir)
    except preemption.Preempted as e:  # a checkpoint of the step reached is saved
        print(f'train.py: {e}', file=sys.stderr, flush=True)
        sys.exit(e.exit_code)


if __name__ == '__main__':
    app.run(main, flags_parser=cli.config_flags_parser('train.py'))
