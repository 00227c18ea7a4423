"""Where a model lives: the one reading of a model path, shared by every command that takes
--model, by training's init.detector and by the Python API (loading.load_predictor).

  resolve(model) -> ModelPath(kind, path, best)

  kind 'run'         a training run directory (config.json + checkpoints/); `RUN:best` is its
                     best checkpoint (config.keep_best keeps it in RUN/best), `RUN` its newest
  kind 'model_dir'   a model directory (model_config.json + state/, from the convert command)
  kind 'state_dict'  a torchvision RetinaNet state dict file (.pth / .safetensors / .npz)

Nothing is read but the directory listing: a path that is none of these is a UserError naming
it (MissingFile where nothing is there).
"""

import dataclasses
from pathlib import Path

from retinanet_jax.errors import MissingFile, UserError

KINDS = ('run', 'model_dir', 'state_dict')
BEST = ':best'


@dataclasses.dataclass(frozen=True)
class ModelPath:
    kind: str  # one of KINDS
    path: Path  # the run directory, model directory or file (without ':best')
    best: bool = False  # a run's best checkpoint instead of its newest

    @property
    def is_run(self) -> bool:
        return self.kind == 'run'

    def __str__(self) -> str:
        return f'{self.path}{BEST if self.best else ""}'


def resolve(model: str | Path) -> ModelPath:
    """What `model` names (module docstring); UserError if it names nothing a model lives in."""
    text, path = str(model), Path(model)
    best = text.endswith(BEST) and not path.exists()
    if best:
        path = Path(text[: -len(BEST)])
    if path.is_dir() and (path / 'config.json').is_file():
        return ModelPath('run', path, best)
    if best:
        raise MissingFile(f'model {text}: {path} is not a training run (no config.json)')
    if path.is_dir() and (path / 'model_config.json').is_file():
        return ModelPath('model_dir', path)
    if path.is_file():
        return ModelPath('state_dict', path)
    if path.exists():
        raise UserError(
            f'model {path}: neither a training run (config.json), a model directory '
            '(model_config.json) nor a state dict file'
        )
    raise MissingFile(f'model {path}: no such file or directory')
