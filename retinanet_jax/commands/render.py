"""Render what the model is fed: one input batch with its ground-truth boxes, to PNG.

  python -m retinanet_jax render --dataset=shapes --split=train --out=/tmp/batch.png
  python -m retinanet_jax render --dataset=coco_folder --annotations=val.json \
      --image_dir=images/ --split=train --size=512 --out=/tmp/batch.png
"""

import numpy as np
from absl import flags

from retinanet_jax import visualize
from retinanet_jax.data import pipeline, sources


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string('dataset', 'shapes', f'one of {", ".join(sources.KNOWN)}', flag_values=fv)
    flags.DEFINE_string('split', 'train', 'dataset split', flag_values=fv)
    flags.DEFINE_string(
        'annotations', None, 'coco_folder: annotation json of the split', flag_values=fv
    )
    flags.DEFINE_string('image_dir', None, 'coco_folder: image folder', flag_values=fv)
    flags.DEFINE_string('data_dir', None, 'tfds data_dir for coco/voc', flag_values=fv)
    flags.DEFINE_integer('size', 128, 'static square input size', flag_values=fv)
    flags.DEFINE_integer('batch_size', 8, 'images to render', flag_values=fv)
    flags.DEFINE_bool('augment', True, 'apply the training augmentations', flag_values=fv)
    flags.DEFINE_integer('seed', 0, 'input seed', flag_values=fv)
    flags.DEFINE_string('out', '/tmp/batch.png', 'PNG to write', flag_values=fv)


def render_batch(batch: dict, names) -> 'visualize.Image.Image':
    """A grid of the batch's valid examples, boxes drawn on the (padded) network input."""
    tiles = []
    for i in np.flatnonzero(batch['valid']):
        keep = batch['gt_labels'][i] >= 0
        image = batch['image'][i]
        tiles.append(
            visualize.draw_boxes(
                image, batch['gt_boxes'][i][keep], batch['gt_labels'][i][keep], names
            )
        )
    return visualize.grid(tiles)


def main(f: flags.FlagValues) -> None:
    if f.dataset == 'shapes':
        source = sources.make_source('shapes', image_size=f.size)
    elif f.dataset == 'coco_folder':
        source = sources.make_source(
            'coco_folder', annotations={f.split: f.annotations}, image_dir=f.image_dir
        )
    else:
        source = sources.make_source(f.dataset, data_dir=f.data_dir)
    config = pipeline.InputConfig(
        image_size=(f.size, f.size), short_side=f.size, max_side=f.size, seed=f.seed
    )
    if f.augment:
        ds = pipeline.train_dataset(source, config, f.batch_size, split=f.split)
    else:
        ds, _ = pipeline.eval_dataset(source, config, f.batch_size, split=f.split)
    batch = ds[0]
    render_batch(batch, source.label_map.names).save(f.out)
    boxes = int((batch['gt_labels'] >= 0).sum())
    print(f'wrote {f.out}: {int(batch["valid"].sum())} images, {boxes} boxes')
