"""One command shape, and what every command shares.

A command is a module of commands/ (commands/__init__.py lists them) with
  its docstring      the first line a summary, then its command lines (its --help shows both)
  define_flags(fv)   its flags, defined on the absl FlagValues `fv` it is given
  main(f) -> int | None   the work, `f` the parsed flags; returns an exit status (None: 0)
  TAKES_CONFIG = True     (optional) it takes --config, a configs/*.py file with its
                          --config.key=value overrides (define_config_flag)
`run(module, argv, prog)` is the rest, the same for every command:
  - the command's own flags only: `--help` lists each flag it takes, the shared ones included,
    and no library's (grain and JAX define theirs in absl's global FLAGS, which is left
    alone);
  - a bad or missing flag, or a bad --config, ends it with one line starting with `prog`
    (a --config is read before JAX or the package is imported: a bad one is named at once);
  - quiet logging, and the persistent compilation cache of --compilation_cache;
  - errors.UserError (bad input, a fault the user must fix) and OSError (a path given that
    cannot be read or written: a missing folder, a full disk) end it with `prog: reason` on one
    line and exit status 1; any other exception is a bug and keeps its traceback.

The shared flags: define_model_flags (--model and how to read it), define_split_flags (which
data a model is evaluated on), define_cache_flag (any command that compiles).
"""

import json
import sys
from types import ModuleType

from absl import flags
from absl import logging as absl_logging

from retinanet_jax.errors import UserError

HELP = ('--help', '-h', '-help', '--helpfull', '--helpshort')


def run(module: ModuleType, argv: list[str], prog: str) -> int:
    """Runs the command `module` on `argv` (argv[0] the program; see the module docstring) and
    returns its exit status."""
    fv = flags.FlagValues()
    if getattr(module, 'TAKES_CONFIG', False):
        define_config_flag(fv, argv)
    module.define_flags(fv)
    if any(a in HELP for a in argv[1:]):
        print(help_text(module, fv))
        return 0
    try:
        rest = fv(argv)
        if 'config' in fv:
            fv.config.get('seed')  # the config file loads lazily: load it now
    except flags.Error as e:
        return _fail(f'{prog}: {e}\nPass --help for the flags.')
    except (KeyError, AttributeError) as e:
        return _fail(f'{prog}: the config has no key {str(e).strip(chr(34) + chr(39))}')
    except (TypeError, ValueError, OSError, SyntaxError, ImportError) as e:
        reason = str(e).strip().splitlines()[-1].strip()  # the innermost reason
        return _fail(f'{prog}: bad --config ({type(e).__name__}): {reason}')
    if len(rest) > 1:
        return _fail(f'{prog}: unexpected arguments {rest[1:]}\nPass --help for the flags.')
    flags.FLAGS.mark_as_parsed()  # libraries' absl flags (grain's) at their defaults
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every step at INFO
    if 'compilation_cache' in fv:
        from retinanet_jax import compilation_cache

        compilation_cache.enable(fv.compilation_cache)
    try:
        return module.main(fv) or 0
    except (UserError, OSError) as e:  # an OSError: a path given that cannot be read or written
        return _fail(f'{prog}: {e}')


def _fail(message: str) -> int:
    print(message, file=sys.stderr, flush=True)
    return 1


def help_text(module: ModuleType, fv: flags.FlagValues) -> str:
    """The module's docstring, then every flag of `fv`: name, help and default."""
    lines = [(module.__doc__ or '').strip(), '', 'flags:']
    for name in sorted(fv):
        flag = fv[name]
        if name != flag.name:  # a short name
            continue
        default = f' (default: {flag.default_as_str})' if flag.default is not None else ''
        lines.append(f'  --{name}: {flag.help}{default}')
    return '\n'.join(lines)


def summary(module_doc: str) -> str:
    """A command's one-line summary: its docstring's first line."""
    return (module_doc or '').strip().splitlines()[0] if module_doc else ''


def define_model_flags(fv: flags.FlagValues) -> None:
    """--model and the settings of torchvision models (inference.loading.load_predictor)."""
    flags.DEFINE_string(
        'model',
        None,
        'a training run (RUN, or RUN:best for its best checkpoint), a model directory or a '
        'torchvision state dict file',
        flag_values=fv,
    )
    flags.DEFINE_enum(
        'variant', 'v1', ['v1', 'v2'], 'torchvision state dicts: which model', flag_values=fv
    )
    flags.DEFINE_integer(
        'short_side', 800, 'torchvision models: resize the short side to this', flag_values=fv
    )
    flags.DEFINE_integer(
        'max_side', 1333, 'torchvision models: ... unless the long side exceeds', flag_values=fv
    )
    flags.DEFINE_enum(
        'weights',
        'auto',
        ['auto', 'ema', 'raw'],
        'training runs: auto (EMA if kept), ema, raw',
        flag_values=fv,
    )


def model_options(f: flags.FlagValues) -> dict:
    """load_predictor's keyword arguments from the flags of define_model_flags."""
    return dict(variant=f.variant, short_side=f.short_side, max_side=f.max_side, weights=f.weights)


def define_split_flags(fv: flags.FlagValues) -> None:
    """--split, --dataset, --dataset_options and --batch_size: which data a model is
    evaluated on (evaluation.split_evaluation.prepare)."""
    flags.DEFINE_string(
        'split', None, "dataset split (a training run: its config's eval_split)", flag_values=fv
    )
    flags.DEFINE_string(
        'dataset', None, 'a source name (data/sources.py); a run: its own', flag_values=fv
    )
    flags.DEFINE_string(
        'dataset_options',
        None,
        'JSON options of --dataset, e.g. {"data_dir": "/data/tfds"}',
        flag_values=fv,
    )
    flags.DEFINE_integer(
        'batch_size', None, "global batch (default: the run's, or one per device)", flag_values=fv
    )


def split_options(f: flags.FlagValues) -> dict:
    """prepare's data keywords from the flags of define_split_flags."""
    try:
        options = json.loads(f.dataset_options) if f.dataset_options else None
    except json.JSONDecodeError as e:
        raise UserError(f'--dataset_options is not valid JSON: {e}') from None
    return dict(dataset=f.dataset, dataset_options=options, batch_size=f.batch_size)


def define_cache_flag(fv: flags.FlagValues) -> None:
    """--compilation_cache: `run` turns the persistent compilation cache on with it."""
    flags.DEFINE_string(
        'compilation_cache',
        None,
        'folder of the persistent XLA compilation cache (default: $RETINANET_JAX_CACHE or '
        '~/.cache/retinanet-jax/jax); "" turns it off',
        flag_values=fv,
    )


def define_config_flag(fv: flags.FlagValues, argv: list[str]) -> None:
    """--config, a configs/*.py file, with its --config.key=value overrides (those in `argv`)."""
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        'config',
        None,
        'path to a configs/*.py file (override any key with --config.key=value)',
        flag_values=fv,
        lock_config=True,
        sys_argv=argv,
    )
