"""A split's ground truth as the model will be trained on it: what the show_data command
prints, writes to summary.json and draws, before any training.

  summary = summarize(source, split, input_config, max_images=None, train=False)
  {'dataset', 'split', 'images', 'boxes', 'boxes_per_image': {'mean', 'max'},
   'background_images' (no object), 'crowd_boxes' (COCO crowds, VOC difficult: evaluation
   only), 'dropped_by_min_size' (narrower or lower than input.min_box_size at the input
   scale), 'cut_by_max_boxes' (beyond input.max_boxes in an image) and 'images_over_max_boxes',
   'box_sizes' [N] (sqrt of each trained box's area, input pixels)}
  picture = size_histogram(summary, anchor_sizes)   # uint8 [H, W, 3]

input_scale / input_boxes: a record's boxes resized as evaluation resizes them (keep_aspect
rounds the new size to whole pixels; square stretches to image_size); training's scale jitter
moves sizes within its range and is not sampled.

Training by crops (input.crop_size, `train=True`): a training example is a window of the image
at its own scale, so boxes are neither resized to image_size nor cut at max_boxes per image
but per window. The figures then come from the windows of each image's first epochs, exactly
as training draws them (`train_windows`: as many epochs as the image's area holds windows, 1
to 64): 'dropped_by_min_size' and 'cut_by_max_boxes' count over those windows, with 'windows',
'boxes_per_window' {'mean', 'max'} and 'windows_over_max_boxes' in place of
'images_over_max_boxes'; 'box_sizes' are the windows' trained boxes, and input_boxes(...,
split_size=n) returns them in window pixels.
"""

import itertools

import numpy as np

from retinanet_jax.data import transforms
from retinanet_jax.data.input_config import InputConfig, keep_aspect_size

MAX_WINDOWS = 64  # windows drawn per image by train_windows


def input_scale(height: int, width: int, input_config: InputConfig) -> tuple[float, float]:
    """(sy, sx) of the evaluation resize of a height x width image."""
    if input_config.resize == 'square':
        h, w = input_config.image_size
        return h / height, w / width
    new_h, new_w = keep_aspect_size((height, width), input_config.short_side, input_config.max_side)
    return new_h / height, new_w / width


def train_windows(record: dict, index: int, records: int, input_config: InputConfig) -> list:
    """Training by crops: the windows of record `index` (of `records` in its split) in its
    first epochs, exactly as training draws them (pipeline.example_rngs of window_key: the
    rescale and the window), each (trained boxes float32 [n, 4] xyxy in window pixels, clipped
    and filtered as training does, before the flips; the boxes min_box_size dropped from it).
    As many epochs as the image's area holds windows (1 to MAX_WINDOWS). No pixel is read."""
    from retinanet_jax.data import pipeline

    hw = np.array([int(record['height']), int(record['width'])], np.int32)
    example = {
        'boxes': np.asarray(record['boxes'], np.float32).reshape(-1, 4),
        'labels': np.asarray(record['labels'], np.int32).reshape(-1),
        'is_crowd': np.asarray(record['is_crowd'], bool).reshape(-1),
    }
    count = int(np.clip(np.ceil(hw.prod() / np.prod(input_config.crop_size)), 1, MAX_WINDOWS))
    out = []
    for epoch in range(count):
        key = pipeline.window_key(index, epoch, records)
        rng = pipeline.example_rngs(input_config.seed, key)[3]
        new_hw = transforms.rescaled_size(hw, *input_config.crop_scale, rng)
        new_hw = hw if new_hw is None else new_hw
        factor = new_hw.astype(np.float32) / hw.astype(np.float32)  # as transforms._resize_to
        scaled = {
            **example,
            'image': np.broadcast_to(np.zeros((), np.uint8), (*new_hw, 3)),  # its shape alone
            'boxes': example['boxes'] * np.tile(factor[::-1], 2)[None],
        }
        window = transforms.random_window(
            scaled,
            input_config.crop_size,
            input_config.crop_min_visible,
            input_config.crop_max_empty,
            rng,
        )
        kept = transforms.clip_and_filter_boxes(window, input_config.min_box_size)
        out.append((kept['boxes'], int((~window['is_crowd']).sum()) - len(kept['boxes'])))
    return out


def _trained(record: dict, index: int, records, input_config: InputConfig) -> list[tuple]:
    """[(trained boxes [n, 4] in input pixels, boxes dropped by min_box_size)]: one per
    window (training by crops: `records`, the split's size, else None) or one for the whole
    image, resized as evaluation resizes it."""
    if records is not None:
        return train_windows(record, index, records, input_config)
    is_crowd = np.asarray(record['is_crowd'], bool).reshape(-1)
    h, w = int(record['height']), int(record['width'])
    sy, sx = input_scale(h, w, input_config)
    boxes = np.asarray(record['boxes'], np.float64).reshape(-1, 4)[~is_crowd]
    boxes = np.clip(boxes * [sx, sy, sx, sy], 0, [w * sx, h * sy, w * sx, h * sy])
    wh = boxes[:, 2:] - boxes[:, :2]
    kept = (wh >= input_config.min_box_size).all(axis=1)
    return [(boxes[kept], int((~kept).sum()))]


def input_boxes(
    records, input_config: InputConfig, max_images: int | None = None, split_size=None
) -> np.ndarray:
    """The non-crowd boxes of ground-truth records (data.source.Source.ground_truth) in input
    pixels, [N, 4] xyxy, from the first `max_images` records. Training by crops: given
    `split_size` (the records of the trained split), the trained boxes of their windows
    (module docstring)."""
    out = []
    for index, record in enumerate(itertools.islice(records, max_images)):
        if split_size is not None and input_config.crop_size is not None:
            out += [b for b, _ in train_windows(record, index, split_size, input_config)]
            continue
        boxes = np.asarray(record['boxes'], np.float64).reshape(-1, 4)
        boxes = boxes[~np.asarray(record['is_crowd'], bool).reshape(-1)]
        sy, sx = input_scale(int(record['height']), int(record['width']), input_config)
        out.append(boxes * np.asarray([sx, sy, sx, sy]))
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 4))


def summarize(
    source, split: str, input_config: InputConfig, max_images: int | None = None, train=False
) -> dict:
    """The split's figures (module docstring), from its ground truth (no image decoded where
    the source reads annotations); `train`: the split is trained on (crops apply)."""
    crops = train and input_config.crop_size is not None
    records = source.num_examples(split) if crops else None
    counts, background, crowd, small, trained, sizes = [], 0, 0, 0, [], []
    for index, record in enumerate(itertools.islice(source.ground_truth(split), max_images)):
        is_crowd = np.asarray(record['is_crowd'], bool).reshape(-1)
        counts.append(len(is_crowd))
        background += len(is_crowd) == 0
        crowd += int(is_crowd.sum())
        for boxes, dropped in _trained(record, index, records, input_config):
            small += dropped
            trained.append(len(boxes))
            wh = boxes[: input_config.max_boxes, 2:] - boxes[: input_config.max_boxes, :2]
            sizes.append(np.sqrt(wh.prod(axis=1)))
    counts, trained = np.asarray(counts), np.asarray(trained, np.int64)
    cut = np.maximum(trained - input_config.max_boxes, 0)
    out = {
        'dataset': source.name,
        'split': split,
        'images': len(counts),
        'boxes': int(counts.sum()),
        'boxes_per_image': {
            'mean': float(counts.mean()) if len(counts) else 0.0,
            'max': int(counts.max(initial=0)),
        },
        'background_images': int(background),
        'crowd_boxes': crowd,
        'dropped_by_min_size': small,
        'cut_by_max_boxes': int(cut.sum()),
    }
    if crops:
        out['windows'] = len(trained)
        out['boxes_per_window'] = {
            'mean': float(trained.mean()) if len(trained) else 0.0,
            'max': int(trained.max(initial=0)),
        }
        out['windows_over_max_boxes'] = int((cut > 0).sum())
    else:
        out['images_over_max_boxes'] = int((cut > 0).sum())
    out['min_box_size'] = input_config.min_box_size
    out['max_boxes'] = input_config.max_boxes
    out['box_sizes'] = np.concatenate(sizes) if sizes else np.zeros(0)
    return out


def size_histogram(summary: dict, anchor_sizes) -> np.ndarray:
    """uint8 [H, W, 3]: the trained boxes' sizes (sqrt of area, input pixels; log bins) with
    the anchors' base sizes drawn as lines: a size far from every line is matched poorly."""
    from matplotlib.figure import Figure

    from retinanet_jax.visualize import figure_array

    sizes = summary['box_sizes']
    figure = Figure(figsize=(6, 3.2), dpi=100)
    ax = figure.add_subplot()
    low = max(1.0, min([*sizes, *anchor_sizes]) / 1.5) if len(sizes) else 1.0
    high = max([*sizes, *anchor_sizes]) * 1.5 if len(sizes) else 1024.0
    ax.hist(sizes, bins=np.geomspace(low, high, 40), color='tab:blue')
    for k, size in enumerate(anchor_sizes):
        ax.axvline(size, color='tab:red', linestyle='--', label='anchor sizes' if k == 0 else None)
    ax.set_xscale('log')
    ax.set_xlabel('box size, sqrt(area) in input pixels')
    ax.set_ylabel('boxes')
    ax.set_title(f'{summary["dataset"]} {summary["split"]}: {len(sizes)} trained boxes')
    ax.legend()
    figure.tight_layout()
    return figure_array(figure)
