"""The commands, one module each, all of one shape (command.py):

  python -m retinanet_jax <command> [--flag=value ...]    or    retinanet-jax <command> ...
  python -m retinanet_jax --help                           lists them
  python -m retinanet_jax <command> --help                 lists a command's flags

`python train.py` is the train command under its usual name. Commands parse flags, call the
library and print; the work lives in the library (imports run one way: no library module
imports a command).
"""

COMMANDS = (
    'train',
    'predict',
    'evaluate',
    'analyze',
    'export',
    'convert',
    'anchors',
    'show_data',
)
