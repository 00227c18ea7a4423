"""Checkpoints: model directories (a model with its ModelConfig) and a training run's
checkpoints (train state and input position), all written with orbax.

Layout of a model directory (`save_model` / `load_model`):
  <dir>/model_config.json   the ModelConfig fields
  <dir>/state/              orbax StandardCheckpointer of nnx.state(model) (all variables)
A run's checkpoints: `run_checkpoints`, `save_run`, `restore_run` (below).
"""

import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from retinanet_jax.errors import AlreadyExists, MissingFile, UserError
from retinanet_jax.models import ModelConfig, RetinaNet, build_retinanet


def save_model(directory: str | Path, model: RetinaNet, config: ModelConfig) -> Path:
    """Writes `model` and `config` under `directory` (which must not hold a model already)."""
    directory = Path(directory).absolute()
    if (directory / 'state').exists():
        raise AlreadyExists(f'{directory} already holds a saved model; choose a new directory')
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / 'state', nnx.state(model))
    (directory / 'model_config.json').write_text(json.dumps(dataclasses.asdict(config), indent=1))
    return directory


def load_model(directory: str | Path) -> tuple[RetinaNet, ModelConfig]:
    """Restores a model saved by `save_model`; errors name the directory and what is wrong."""
    directory = Path(directory).absolute()
    config_file = directory / 'model_config.json'
    if not config_file.is_file() or not (directory / 'state').is_dir():
        raise MissingFile(f'{directory} is not a saved model (no model_config.json / state)')
    try:
        config = ModelConfig(**json.loads(config_file.read_text()))
    except (TypeError, ValueError) as e:
        raise UserError(f'{config_file}: not a valid model config: {e}') from e
    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: build_retinanet(config)))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(directory / 'state', abstract_state)
    except (ValueError, KeyError) as e:
        raise UserError(f'{directory}/state does not match {config}: {e}') from e
    return nnx.merge(graphdef, state), config


# ------------------------------------------------------------------------ training runs
#
# A run's checkpoints: <workdir>/checkpoints/<step>/{model, optimizer, [ema], data}, written by
# orbax's CheckpointManager (atomically: a save cut off half way leaves a temporary directory
# that is never read). 'model', 'optimizer' and 'ema' (runs with config.ema on) are the nnx
# states of the train state (standard orbax arrays); 'data' is the input position (JSON, see
# data/pipeline.py), where the run has one. Inference restores 'ema' or 'model' alone.

STATE_ITEMS = ('model', 'optimizer', 'ema')
ITEMS = (*STATE_ITEMS, 'data')


def run_checkpoints(
    workdir: str | Path, keep: int | None = None, folder: str = 'checkpoints'
) -> ocp.CheckpointManager:
    """The checkpoint manager of the run in `workdir` (`keep` given: for writing, keeping the
    last `keep` checkpoints; None: read-only use); `folder` 'best': its best checkpoint."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=keep is not None)
    return ocp.CheckpointManager(
        Path(workdir).absolute() / folder, options=options, handler_registry=_registry()
    )


def best_checkpoints(workdir: str | Path, metric: str) -> ocp.CheckpointManager:
    """The manager of `workdir`/best, which keeps the one checkpoint (the weights: 'model' and
    'ema') of the best evaluation by `metric` (the highest; the lowest for a loss), beside the
    newest ones in `workdir`/checkpoints. Save with metrics={metric: value} (save_best)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        best_fn=lambda metrics: metrics[metric],
        best_mode='min' if 'loss' in metric else 'max',
        keep_checkpoints_without_metrics=False,
        create=True,
    )
    return ocp.CheckpointManager(
        Path(workdir).absolute() / 'best', options=options, handler_registry=_registry()
    )


def save_best(manager: ocp.CheckpointManager, step: int, state: dict, metrics: dict) -> None:
    """Offers the weights of `state` at `step`, scored by `metrics`, to a best_checkpoints
    manager (it keeps them if they are the best so far); waits until it is done."""
    items = {name: ocp.args.StandardSave(state[name]) for name in ('model', 'ema') if name in state}
    try:
        manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)
        manager.wait_until_finished()
    except Exception as e:
        raise CheckpointWriteError(
            f'{manager.directory}: could not write checkpoint {step} ({_reason(e)})'
        ) from e


def _registry():
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for name in STATE_ITEMS:
        registry.add(name, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
        registry.add(name, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    registry.add('data', ocp.args.JsonSave, ocp.JsonCheckpointHandler)
    registry.add('data', ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    return registry


class UnreadableCheckpoint(UserError):
    """A checkpoint whose files cannot be read (truncated or missing array files, a missing
    item, an unreadable input position): a fault to fall back from, unlike a readable
    checkpoint of another model or input order, which is a configuration error."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint that could not be written (a full disk, no permission); the earlier ones
    are intact, and orbax never restores the half-written one (its temporary directory)."""


def save_run(manager: ocp.CheckpointManager, step: int, state: dict, data: dict | None) -> None:
    """Writes `state` ({'model', 'optimizer', ['ema']}) and the input position `data` as
    checkpoint `step`, and waits until it is complete; CheckpointWriteError names the folder
    and the step where it cannot."""
    items = {name: ocp.args.StandardSave(state[name]) for name in STATE_ITEMS if name in state}
    if data is not None:
        items['data'] = ocp.args.JsonSave(data)
    try:
        manager.save(step, args=ocp.args.Composite(**items))
        manager.wait_until_finished()
    except Exception as e:  # orbax raises what the file system raised, sometimes wrapped
        raise CheckpointWriteError(
            f'{manager.directory}: could not write checkpoint {step} ({_reason(e)}); the earlier '
            'checkpoints are intact'
        ) from e


def restore_run(
    manager: ocp.CheckpointManager, abstract: dict, *, data: bool = False, step: int | None = None
) -> tuple[dict | None, int]:
    """(restored items, step) of the latest (or given) checkpoint, or (None, 0) if there is none.

    `abstract`: {item: abstract state} of the items to restore ('model' and / or 'optimizer',
    shape-dtype structs with the wanted shardings); `data` also reads the input position
    (None where the checkpoint has none). Stored shapes are compared
    with the wanted ones from orbax's metadata first: a checkpoint of another model is refused
    (ValueError), its differences named, before any array is read. A checkpoint that cannot be
    read raises UnreadableCheckpoint, saying why."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return None, 0
    where = f'{manager.directory}/{step}'
    try:
        metadata = manager.item_metadata(step)
    except Exception as e:
        raise UnreadableCheckpoint(f'{where}: unreadable metadata ({_reason(e)})') from e
    differences = []
    for name, tree in abstract.items():
        if metadata.get(name) is None and name == 'ema' and metadata.get('model') is not None:
            raise UserError(
                f'{where} was written without config.ema (no EMA of the weights); resume it '
                'with config.ema.decay=0 or use a new workdir'
            )
        if metadata.get(name) is None:
            raise UnreadableCheckpoint(f'{where} has no {name!r} item')
        stored, wanted = _shapes(metadata[name].tree, name), _shapes(tree, name)
        differences += sorted(
            f'{k}: checkpoint {stored.get(k, "absent")}, model {wanted.get(k, "absent")}'
            for k in set(stored) | set(wanted)
            if stored.get(k) != wanted.get(k)
        )
    if differences:
        raise UserError(
            f'{where} does not match this config (another model?); use a new workdir. '
            f'{len(differences)} difference(s), e.g. {differences[:3]}'
        )
    items = {name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}
    try:
        restored = dict(manager.restore(step, args=ocp.args.Composite(**items)).items())
    except Exception as e:  # truncated or missing array files: tensorstore's errors vary
        raise UnreadableCheckpoint(f'{where}: unreadable arrays ({_reason(e)})') from e
    restored['data'] = _read_position(manager, step, where) if data else None
    return restored, step


def _read_position(manager: ocp.CheckpointManager, step: int, where: str):
    """The checkpoint's input position as saved (JSON; its meaning is the pipeline's), or None
    where the checkpoint has none."""
    if not (Path(where) / 'data').is_dir():
        return None
    try:
        position = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    except Exception as e:  # a truncated or corrupt file
        raise UnreadableCheckpoint(
            f'{where}/data: the input position is unreadable, corrupt or truncated ({_reason(e)})'
        ) from e
    return position['data']


def restore_newest_readable(
    manager: ocp.CheckpointManager, abstract: dict, *, data: bool = False, check=None
) -> tuple[dict | None, int]:
    """restore_run of the newest checkpoint that restores (and passes `check(restored, step)`,
    which may raise UnreadableCheckpoint too). Each unreadable one on the way is named in one
    warning line and moved aside, not deleted, to <workdir>/unreadable_checkpoints/<step>; if
    there were checkpoints but none restores, ValueError says so (the run never starts over
    silently). Errors other than UnreadableCheckpoint (another model, another input order)
    stop at once. With several processes, all take the same decision (any process that cannot
    read a checkpoint makes all fall back) and process 0 moves the folder."""
    reasons = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored, step = restore_run(manager, abstract, data=data, step=step)
            if check is not None:
                check(restored, step)
            failed = None
        except UnreadableCheckpoint as e:
            failed = str(e)
        if not _any_process(failed is not None):
            return restored, step
        _quiet_closed_event_loops()
        aside = _move_aside(manager, step)
        why = failed or 'unreadable on another process'
        reasons.append(f'{step} ({why})')
        print(
            f'warning: checkpoint {step} cannot be restored ({why}); moved aside to {aside}',
            file=sys.stderr,
            flush=True,
        )
    if reasons:
        raise UserError(
            f'{manager.directory}: no checkpoint restores; moved aside: {"; ".join(reasons)}. '
            'Restore a copy of a checkpoint there, or use a new workdir'
        )
    aside = Path(manager.directory).parent / 'unreadable_checkpoints'
    if aside.is_dir() and any(aside.iterdir()):  # an earlier attempt moved them all aside
        raise UserError(
            f'{manager.directory} holds no checkpoint, and {aside} holds '
            f'{sorted(p.name for p in aside.iterdir())} that could not be restored: the run '
            'does not start over by itself; restore a copy of a checkpoint, or use a new workdir'
        )
    return None, 0


def _quiet_closed_event_loops() -> None:
    """After a failed read, orbax's abandoned asyncio callbacks raise 'Event loop is closed'
    as unraisable exceptions, each printed as a traceback after the one-line warning. Only
    those are dropped (once installed, for the process); every other one is reported."""
    previous = sys.unraisablehook
    if getattr(previous, 'retinanet_jax', False):
        return

    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == 'Event loop is closed'):
            previous(unraisable)

    hook.retinanet_jax = True
    sys.unraisablehook = hook


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag

    return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())


def _move_aside(manager: ocp.CheckpointManager, step: int) -> Path:
    """Moves checkpoint `step` to <workdir>/unreadable_checkpoints/<step>[-k] (process 0; the
    others wait for it) and makes the manager forget it."""
    source = Path(manager.directory) / str(step)
    target = Path(manager.directory).parent / 'unreadable_checkpoints' / str(step)
    k = 1
    while target.exists():
        target = target.with_name(f'{step}-{k}')
        k += 1
    if jax.process_index() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f'checkpoint {step} moved aside')
    manager.reload()
    return target


def _reason(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f'{type(error).__name__}: {lines[0][:200] if lines else ""}'


def _shapes(tree, prefix: str) -> dict[str, tuple]:
    """{'model/backbone/conv1/kernel': shape} of a state tree or of orbax's metadata of one."""

    def name(path):
        keys = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]
        return '/'.join([prefix, *(k for k in keys if k != 'value')])

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {name(p): tuple(x.shape) for p, x in leaves}
