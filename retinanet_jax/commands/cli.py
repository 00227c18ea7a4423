"""What the command-line tools (train.py, predict, evaluate, analyze, export, convert,
anchors_report) share: the --model and --compilation_cache flags, quiet start-up, and bad
input (a bad --config too) reported in one line.

Library code never imports this module; the tools import it.
"""

import functools
import json
import sys

from absl import flags
from absl import logging as absl_logging

# Bad input that ends a tool in one line (exit_on_bad_input), with checkpoint.CheckpointWriteError
# (a full disk or no permission, named with the folder and the step). This module imports the
# package's heavy modules (JAX, orbax) only where a function needs them: a bad --config or flag
# is then reported in a fraction of a second.
KNOWN_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError)


def define_model_flags() -> None:
    """--model and the settings of torchvision models (see inference.load_predictor)."""
    flags.DEFINE_string('model', None, 'a training run, a model directory or a state dict file')
    flags.DEFINE_enum('variant', 'v1', ['v1', 'v2'], 'torchvision state dicts: which model')
    flags.DEFINE_integer('short_side', 800, 'torchvision models: resize the short side to this')
    flags.DEFINE_integer('max_side', 1333, 'torchvision models: ... unless the long side exceeds')
    flags.DEFINE_enum(
        'weights', 'auto', ['auto', 'ema', 'raw'], 'training runs: auto (EMA if kept), ema, raw'
    )


def model_options() -> dict:
    """load_predictor's keyword arguments from the flags of define_model_flags."""
    f = flags.FLAGS
    return dict(variant=f.variant, short_side=f.short_side, max_side=f.max_side, weights=f.weights)


def define_split_flags() -> None:
    """--split, --dataset, --dataset_options and --batch_size: which data a model is
    evaluated on (see evaluation.prepare)."""
    flags.DEFINE_string('split', None, "dataset split (a training run: its config's eval_split)")
    flags.DEFINE_string('dataset', None, 'a source name (data/sources.py); a run: its own')
    flags.DEFINE_string(
        'dataset_options', None, 'JSON options of --dataset, e.g. {"data_dir": "/data/tfds"}'
    )
    flags.DEFINE_integer('batch_size', None, "global batch (default: the run's, or one per device)")


def split_options(prog: str) -> dict:
    """evaluation.prepare's data keywords from the flags of define_split_flags (bad JSON in
    --dataset_options ends the program in one line)."""
    f = flags.FLAGS
    try:
        options = json.loads(f.dataset_options) if f.dataset_options else None
    except json.JSONDecodeError as e:
        sys.exit(f'{prog}: --dataset_options is not valid JSON: {e}')
    return dict(dataset=f.dataset, dataset_options=options, batch_size=f.batch_size)


def define_cache_flag() -> None:
    flags.DEFINE_string(
        'compilation_cache',
        None,
        'folder of the persistent XLA compilation cache (default: $RETINANET_JAX_CACHE or '
        '~/.cache/retinanet-jax/jax); "" turns it off',
    )


def start() -> None:
    """What every tool does first: quiet logging, the compilation cache of --compilation_cache
    (define_cache_flag) switched on."""
    from retinanet_jax import compilation_cache

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every step at INFO
    compilation_cache.enable(flags.FLAGS.compilation_cache)


def exit_on_bad_input(prog: str, fn, *args, **kwargs):
    """fn(*args, **kwargs); bad input (a ValueError, a missing file, ...) ends the program
    with `prog: reason` on one line instead of a stack of library internals."""
    from retinanet_jax import checkpoint

    try:
        return fn(*args, **kwargs)
    except (*KNOWN_ERRORS, checkpoint.CheckpointWriteError) as e:
        sys.exit(f'{prog}: {e}')


def config_flags_parser(prog: str):
    """absl's flag parser for a tool with a --config file flag (ml_collections), reporting a
    bad --config (a missing or broken file, an unknown key, a wrong type) in one line that
    starts with `prog` instead of a traceback: app.run(main, flags_parser=...)."""
    return functools.partial(_parse_config_flags, prog)


def _parse_config_flags(prog: str, argv: list[str]) -> list[str]:
    try:
        args = flags.FLAGS(argv)
        flags.FLAGS.config.get('seed')  # the config file loads lazily: load it now
        return args
    except flags.Error as e:
        sys.exit(f'{prog}: {e}\nPass --help for the flags.')
    except (KeyError, AttributeError) as e:
        sys.exit(f'{prog}: the config has no key {str(e).strip(chr(34) + chr(39))}')
    except (TypeError, ValueError, OSError, SyntaxError) as e:
        reason = str(e).strip().splitlines()[-1].strip()  # the innermost reason
        sys.exit(f'{prog}: bad --config ({type(e).__name__}): {reason}')
