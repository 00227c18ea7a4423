"""Train and evaluate RetinaNet (the train command, commands/train.py, under its usual name).

python train.py --config=configs/shapes.py --workdir=/tmp/shapes
python train.py --config=configs/shapes.py --workdir=/tmp/shapes --config.train_steps=100

`python train.py --help` lists the flags; exit status: 0 done, 1 bad input or a fault it cannot
go past (one line says which), 143 / 130 after a SIGTERM / SIGINT once a checkpoint is saved.
"""

import sys

from retinanet_jax.commands import command, train

if __name__ == '__main__':
    sys.exit(command.run(train, sys.argv, prog='train.py'))
