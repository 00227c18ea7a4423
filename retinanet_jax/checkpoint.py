"""Saving and loading a model (its nnx state, with orbax) together with its ModelConfig.

Layout of a model directory:
  <dir>/model_config.json   the ModelConfig fields
  <dir>/state/              orbax StandardCheckpointer of nnx.state(model) (all variables)
"""

import dataclasses
import json
from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

from retinanet_jax.models import ModelConfig, RetinaNet, build_model


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
    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: build_model(config)))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(directory / 'state', abstract_state)
    except (ValueError, KeyError) as e:
        raise ValueError(f'{directory}/state does not match {config}: {e}') from e
    return nnx.merge(graphdef, state), config
