"""A model's evaluation on a split by sliced inference: every image of the split at its own
resolution, cut into overlapping windows (inference/tiling.py), its merged detections scored
against the ground truth by the same COCO evaluator (coco_metrics.py) as the whole-image
evaluation (split_evaluation.py), so the metrics have the same names and meaning.

  metrics = evaluate_tiled(predictor, source, split, evaluator, tiles, progress=tqdm)

Each process evaluates its share of the split's images (index % process count), the evaluator
gathers the detections of every process. Small images share batches of windows. The shares'
windows differ in number, but every process must launch the predict program as often as the
others: each counts its own share's calls first (from the ground truth's image sizes), all
take the largest count, and the ones with fewer end with blank calls (tiling.idle_calls).
There is no validation loss: the loss is the training loss of the model's canvas, which a whole
large image never fits.
"""

import jax
import numpy as np

from retinanet_jax.inference import tiling


def evaluate_tiled(predictor, source, split: str, evaluator, tiles, progress=None) -> dict:
    """The evaluator's metrics of `predictor`'s sliced detections (tiles: tiling.TileConfig)
    on every image of `source`'s `split`; `progress`: an optional progress-bar class. Small
    images share batches of windows (tiling.image_groups)."""
    evaluator.reset()
    indices = range(jax.process_index(), source.num_examples(split), jax.process_count())
    mine, most = share_calls(predictor, source, split, indices, tiles)
    bar = progress(total=len(indices), desc='eval (tiles)', leave=False) if progress else None
    examples = (source.example(split, index) for index in indices)
    for group in tiling.image_groups(predictor, examples, tiles, lambda e: e['image']):
        found = tiling.predict_tiled(predictor, [e['image'] for e in group], tiles)
        for e, dets in zip(group, found, strict=True):
            evaluator.add_batch(
                {k: v[None] for k, v in dets.items()},
                {'image_id': np.array([e['image_id']]), 'valid': np.ones(1, bool)},
            )
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    tiling.idle_calls(predictor, tiles, most - mine)  # as many launches as every process
    return evaluator.metrics()


def share_calls(predictor, source, split: str, indices, tiles) -> tuple[int, int]:
    """(the jitted calls that this process's share, `indices` of the split, makes by tiles, the
    most that any process's share makes), from the images' sizes in the ground truth; with one
    process, (0, 0): nothing to match."""
    if jax.process_count() == 1:
        return 0, 0
    from jax.experimental import multihost_utils

    mine = set(indices)
    sizes = [
        (int(r['height']), int(r['width']))
        for k, r in enumerate(source.ground_truth(split))
        if k in mine
    ]
    calls = tiling.call_count(predictor, sizes, tiles)
    return calls, int(np.max(multihost_utils.process_allgather(np.array(calls))))


def run_tiles(settings) -> 'tiling.TileConfig | None':
    """The tiles that a run's evaluation uses (settings.evaluation.tile_size and tile_overlap;
    windows in batches of this process's share of the run's batch_size, as its evaluation
    batches), or None: whole images on the canvas."""
    c = settings.evaluation
    if not c.tile_size:
        return None
    local = max(1, settings.batch_size // jax.process_count())
    return tiling.TileConfig(c.tile_size, c.tile_overlap, local)
