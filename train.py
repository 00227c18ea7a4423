"""Train and evaluate RetinaNet: flags and config in, `train_lib.train_and_evaluate` out.

python train.py --config=configs/shapes.py --workdir=/tmp/shapes
python train.py --config=configs/shapes.py --workdir=/tmp/shapes --config.train_steps=100
"""

import jax
import torch  # noqa: F401  (torch, if installed, must be imported before tensorflow)
from absl import app, flags, logging
from ml_collections import config_flags

from retinanet_jax import train_lib

config_flags.DEFINE_config_file('config', None, 'path to a configs/*.py file', lock_config=True)
flags.DEFINE_string('workdir', None, 'directory for checkpoints, logs and metrics')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)
    jax.config.update('jax_threefry_partitionable', True)
    train_lib.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
    app.run(main)
