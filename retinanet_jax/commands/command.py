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

import difflib
import importlib.util
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
    if any(a in HELP for a in argv[1:]):
        print(help_text(module, flag_values(module, argv)))
        return 0
    try:
        fv = parse(module, argv)
    except UsageError as e:
        return _fail(f'{prog}: {e}')
    flags.FLAGS.mark_as_parsed()  # libraries' absl flags (grain's) at their defaults
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every step at INFO
    try:
        if 'compilation_cache' in fv:  # a folder that cannot be made: one line, as any path
            from retinanet_jax import compilation_cache

            compilation_cache.enable(fv.compilation_cache)
        return module.main(fv) or 0
    except (UserError, OSError) as e:  # an OSError: a path given that cannot be read or written
        return _fail(f'{prog}: {e}')


class UsageError(UserError):
    """A flag the command does not take, a bad value, or a bad --config: its one line."""


def flag_values(module: ModuleType, argv: list[str]) -> flags.FlagValues:
    """The command's own flags, unparsed (a --config among them reads its overrides from
    `argv`)."""
    fv = flags.FlagValues()
    if getattr(module, 'TAKES_CONFIG', False):
        define_config_flag(fv, argv)
    module.define_flags(fv)
    return fv


def parse(module: ModuleType, argv: list[str]) -> flags.FlagValues:
    """The command's flags parsed from `argv`, its --config loaded with its overrides;
    UsageError with the one line that says what is wrong. What `run` does before the work."""
    fv = flag_values(module, argv)
    unknown = _unknown_flag(argv, fv)
    if unknown:  # named before the config file loads (it imports JAX: seconds)
        raise UsageError(f'{unknown}\nPass --help for the flags.')
    try:
        rest = fv(argv)
        if 'config' in fv:
            fv.config.get('seed')  # the config file loads lazily: load it now
    except flags.Error as e:
        raise UsageError(f'{e}\nPass --help for the flags.') from None
    except (KeyError, AttributeError) as e:
        raise UsageError(_no_such_key(argv, e)) from None
    except (TypeError, ValueError, OSError, SyntaxError, ImportError) as e:
        reason = str(e).strip().splitlines()[-1].strip()  # the innermost reason
        raise UsageError(f'bad --config ({type(e).__name__}): {reason}') from None
    if len(rest) > 1:
        raise UsageError(f'unexpected arguments {rest[1:]}\nPass --help for the flags.')
    return fv


# absl's own flags, which every FlagValues parses.
_ABSL = ('flagfile', 'undefok')


def _unknown_flag(argv: list[str], fv: flags.FlagValues) -> str | None:
    """'unknown flag --x (did you mean --y?)' for the first flag of `argv` that the command
    does not take (--config.key overrides aside: the config's keys), else None. absl's syntax:
    --name=value, --name value (the next argument is the value, whatever it starts with),
    --bool / --nobool, one dash or two; nothing after '--' is a flag."""
    args = iter(argv[1:])
    for arg in args:
        if arg == '--':
            return None
        if not arg.startswith('-') or arg.startswith('--config.'):
            if arg.startswith('--config.') and '=' not in arg:
                next(args, None)  # its value
            continue
        name, has_value = arg.lstrip('-').split('=', 1)[0], '=' in arg
        if name in fv:
            if not has_value and not fv[name].boolean:
                next(args, None)  # its value
            continue
        if name in _ABSL or (name.startswith('no') and name[2:] in fv):
            continue
        near = difflib.get_close_matches(name, list(fv), n=1)
        return f'unknown flag --{name}' + (f' (did you mean --{near[0]}?)' if near else '')
    return None


def _no_such_key(argv: list[str], error: Exception) -> str:
    """'the config has no key X; the nearest known key: Y' for the first --config.X override
    of `argv` that the config file's ConfigDict lacks; else the error's own words (a key that
    the config file itself reads and lacks)."""
    keys = _file_keys(argv)
    for arg in argv:
        if arg.startswith('--config.') and keys is not None:
            key = arg[len('--config.') :].split('=', 1)[0]
            if key not in keys:
                near = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
                hint = f'; the nearest known key: {near[0]}' if near else ''
                return f'the config has no key {key}{hint}'
    reason = str(error).strip('"\'').splitlines()[0].strip('"\'')
    return f'the config has no key {reason}'


def _file_keys(argv: list[str]) -> list[str] | None:
    """Every key of the ConfigDict of argv's --config file (--config=PATH or --config PATH;
    PATH:arg passes arg to get_config), or None where it cannot be read."""
    path = None
    for i, arg in enumerate(argv):
        if arg.startswith('--config='):
            path = arg.split('=', 1)[1]
        elif arg == '--config' and i + 1 < len(argv):
            path = argv[i + 1]
    if path is None:
        return None
    path, _, arg = path.partition(':')
    try:
        spec = importlib.util.spec_from_file_location('_config', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return config_keys(module.get_config(arg) if arg else module.get_config())
    except Exception:
        return None


def config_keys(config, prefix: str = '', leaves_only: bool = False) -> list[str]:
    """Every key of a (nested) ConfigDict, dotted: 'model', 'model.depth', ...; `leaves_only`:
    the keys of values, a source's options counted as one ('data.options')."""
    keys = []
    for name, value in config.items():
        key = prefix + name
        nested = hasattr(value, 'items') and not (leaves_only and name.endswith('options'))
        if not (leaves_only and nested):
            keys.append(key)
        if nested:
            keys += config_keys(value, f'{key}.', leaves_only)
    return keys


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


def define_tile_flags(fv: flags.FlagValues) -> None:
    """--tile_size, --tile_overlap and --tile_batch: sliced inference (inference/tiling.py)."""
    flags.DEFINE_integer(
        'tile_size',
        0,
        'sliced inference: cut each image into overlapping windows of this side in pixels, '
        "each run at the model's scale (0: none, the whole image resized to the canvas; "
        "evaluate and analyze, where not given: the run's config.evaluation.tile_size)",
        flag_values=fv,
    )
    flags.DEFINE_float(
        'tile_overlap',
        0.2,
        'sliced inference: the share of a window its neighbour overlaps',
        flag_values=fv,
    )
    flags.DEFINE_integer(
        'tile_batch', 8, 'sliced inference: windows per jitted call (each process)', flag_values=fv
    )


def tile_options(f: flags.FlagValues, unset=None):
    """The TileConfig of define_tile_flags' flags, or None (--tile_size=0: no slicing), or
    `unset` where no --tile_size is given (evaluate and analyze: the run's own tiles)."""
    if not f['tile_size'].present:
        given = [f'--{k}' for k in ('tile_overlap', 'tile_batch') if f[k].present]
        if given and unset is not None:
            raise UserError(
                f"{' and '.join(given)}: give --tile_size too (without it, the run's "
                'config.evaluation.tile_size and tile_overlap apply)'
            )
        return unset
    if not f.tile_size:
        return None
    from retinanet_jax.inference.tiling import TileConfig

    return TileConfig(f.tile_size, f.tile_overlap, f.tile_batch)
