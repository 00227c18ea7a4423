"""Checkpoints: model directories (a model with its ModelConfig) and a training run's
checkpoints (train state and input position), all written with orbax.

Layout of a model directory (`save_model` / `load_model`):
  <dir>/model_config.json   the ModelConfig fields
  <dir>/state/              orbax StandardCheckpointer of nnx.state(model) (all variables)
A run's checkpoints: `run_checkpoints`, `save_run`, `restore_run` (below).
"""

import dataclasses
import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from retinanet_jax.models import ModelConfig, RetinaNet, abstract_model


def save_model(directory: str | Path, model: RetinaNet, config: ModelConfig) -> Path:
    """Writes `model` and `config` under `directory` (which must not hold a model already)."""
    directory = Path(directory).absolute()
    if (directory / 'state').exists():
        raise FileExistsError(f'{directory} already holds a saved model; choose a new directory')
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
        raise FileNotFoundError(f'{directory} is not a saved model (no model_config.json / state)')
    try:
        config = ModelConfig(**json.loads(config_file.read_text()))
    except (TypeError, ValueError) as e:
        raise ValueError(f'{config_file}: not a valid model config: {e}') from e
    graphdef, abstract_state = nnx.split(abstract_model(config))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(directory / 'state', abstract_state)
    except (ValueError, KeyError) as e:
        raise ValueError(f'{directory}/state does not match {config}: {e}') from e
    return nnx.merge(graphdef, state), config


# ------------------------------------------------------------------------ training runs
#
# A run's checkpoints: <workdir>/checkpoints/<step>/{model, optimizer, data}, written by orbax's
# CheckpointManager (atomically: a save cut off half way leaves a temporary directory that is
# never read). 'model' and 'optimizer' are the nnx states of the train state (standard orbax
# arrays); 'data' is the input position (JSON, see data/pipeline.py), where the run has one.
# Inference restores 'model' alone.

ITEMS = ('model', 'optimizer', 'data')


def run_checkpoints(workdir: str | Path, keep: int | None = None) -> ocp.CheckpointManager:
    """The checkpoint manager of the run in `workdir` (`keep` given: for writing, keeping the
    last `keep` checkpoints; None: read-only use)."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for name in ITEMS[:2]:
        registry.add(name, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
        registry.add(name, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    registry.add('data', ocp.args.JsonSave, ocp.JsonCheckpointHandler)
    registry.add('data', ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=keep is not None)
    return ocp.CheckpointManager(
        Path(workdir).absolute() / 'checkpoints', options=options, handler_registry=registry
    )


def save_run(manager: ocp.CheckpointManager, step: int, state: dict, data: dict | None) -> None:
    """Writes `state` ({'model': ..., 'optimizer': ...}) and the input position `data` as
    checkpoint `step`, and waits until it is complete."""
    items = {name: ocp.args.StandardSave(state[name]) for name in ITEMS[:2]}
    if data is not None:
        items['data'] = ocp.args.JsonSave(data)
    manager.save(step, args=ocp.args.Composite(**items))
    manager.wait_until_finished()


def restore_run(
    manager: ocp.CheckpointManager, abstract: dict, *, data: bool = False, step: int | None = None
) -> tuple[dict | None, int]:
    """(restored items, step) of the latest (or given) checkpoint, or (None, 0) if there is none.

    `abstract`: {item: abstract state} of the items to restore ('model' and / or 'optimizer',
    shape-dtype structs with the wanted shardings); `data` also reads the input position
    (None where the checkpoint has none). Stored shapes are compared with the wanted ones from
    orbax's metadata first: a checkpoint of another model is refused, its differences named,
    before any array is read."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return None, 0
    where = f'{manager.directory}/{step}'
    metadata = manager.item_metadata(step)
    differences = []
    for name, tree in abstract.items():
        if metadata.get(name) is None:
            raise ValueError(f'{where} has no {name!r} item: not a checkpoint of this version')
        stored, wanted = _shapes(metadata[name].tree, name), _shapes(tree, name)
        differences += sorted(
            f'{k}: checkpoint {stored.get(k, "absent")}, model {wanted.get(k, "absent")}'
            for k in set(stored) | set(wanted)
            if stored.get(k) != wanted.get(k)
        )
    if differences:
        raise ValueError(
            f'{where} does not match this config (another model?); use a new --workdir. '
            f'{len(differences)} difference(s), e.g. {differences[:3]}'
        )
    items = {name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}
    restored = dict(manager.restore(step, args=ocp.args.Composite(**items)).items())
    restored['data'] = None
    if data and (Path(where) / 'data').is_dir():
        try:
            position = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
            restored['data'] = position['data']
        except (ValueError, OSError) as e:  # a truncated or corrupt file
            reason = str(e).splitlines()[0][:200]
            raise ValueError(
                f'{where}/data: the input position is unreadable, corrupt or truncated '
                f'({type(e).__name__}: {reason}); use an earlier checkpoint or a new --workdir'
            ) from None
    return restored, step


def _shapes(tree, prefix: str) -> dict[str, tuple]:
    """{'model/backbone/conv1/kernel': shape} of a state tree or of orbax's metadata of one."""

    def name(path):
        keys = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]
        return '/'.join([prefix, *(k for k in keys if k != 'value')])

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {name(p): tuple(x.shape) for p, x in leaves}
