"""A run's input position: where its training input stands after step k, saved in every
checkpoint beside the train state, and checked when a run resumes. This module owns both
ends: the trainer's checkpoints write `position(step, order)`, and resuming reads it back
through `check_position`.

  order = order_of(source, config, batch_size, split=..., process_count=...)
  saved = position(step, order)       # {'next_index': step, 'order': order}, JSON
  check_position(saved, order, step, where)

The training batches are an index-level order (pipeline.train_dataset: batch k is step k's), so
the step alone places the input; `order` is what that order depends on (dataset, split, size,
seed, per-process batch, process count). A position whose order differs from the run's cannot
continue its epoch (UserError naming what changed); a missing or malformed one is a
CorruptPosition (the checkpoint is unreadable: resuming without it would restart the epoch).
"""

from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.data.source import Source
from retinanet_jax.errors import UserError


def position(step: int, order: dict) -> dict:
    """The input position after `step` steps of the training order `order` (order_of)."""
    return {'next_index': step, 'order': order}


def order_of(
    source: Source, config: InputConfig, batch_size: int, *, split: str, process_count: int
) -> dict:
    """What the training order depends on: two runs with equal descriptions read the same
    records at the same steps (a checkpoint stores it with the input position)."""
    return {
        'dataset': source.name,
        'split': split,
        'num_examples': source.num_examples(split),
        'seed': config.seed,
        'batch_size_per_process': batch_size,
        'process_count': process_count,
    }


class CorruptPosition(UserError):
    """A checkpoint's input position that is not what `position` wrote (check_position)."""


def check_position(saved, order: dict, step: int, where: str) -> None:
    """Checks a checkpoint's input position (`{'next_index': step, 'order': order_of(...)}`)
    against this run: UserError naming what changed (dataset size, seed, batch size, process
    count: the interrupted epoch would not continue); CorruptPosition where it is missing or
    malformed (resuming without it would silently restart the epoch)."""
    if saved is None:
        raise CorruptPosition(
            f'{where}: the checkpoint has no input position; it cannot resume the input exactly'
        )
    if (
        not isinstance(saved, dict)
        or not isinstance(saved.get('next_index'), int)
        or not isinstance(saved.get('order'), dict)
    ):
        raise CorruptPosition(f'{where}: the input position is corrupt ({str(saved)[:100]!r})')
    if saved['next_index'] != step:
        raise CorruptPosition(
            f'{where}: the input position {saved["next_index"]} does not match checkpoint step '
            f'{step} (a corrupt checkpoint)'
        )
    changed = [
        f'{k} {saved["order"].get(k, "absent")!r} -> {v!r}'
        for k, v in order.items()
        if saved['order'].get(k) != v
    ]
    if changed:
        raise UserError(
            f'{where}: the training data order has changed since this checkpoint '
            f'({"; ".join(changed)}), so resuming would not continue its epoch; restore those '
            'settings or use a new workdir'
        )
