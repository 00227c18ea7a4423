"""A split's ground truth as the model will be trained on it: what the show_data command
prints, writes to summary.json and draws, before any training.

  summary = summarize(source, split, input_config, max_images=None)
  {'dataset', 'split', 'images', 'boxes', 'boxes_per_image': {'mean', 'max'},
   'background_images' (no object), 'crowd_boxes' (COCO crowds, VOC difficult: evaluation
   only), 'dropped_by_min_size' (narrower or lower than input.min_box_size at the input
   scale), 'cut_by_max_boxes' (beyond input.max_boxes in an image) and 'images_over_max_boxes',
   'box_sizes' [N] (sqrt of each trained box's area, input pixels)}
  picture = size_histogram(summary, anchor_sizes)   # uint8 [H, W, 3]

input_scale / input_boxes: a record's boxes resized as evaluation resizes them (keep_aspect
rounds the new size to whole pixels; square stretches to image_size); training's scale jitter
moves sizes within its range and is not sampled.
"""

import itertools

import numpy as np

from retinanet_jax.data.input_config import InputConfig, keep_aspect_size


def input_scale(height: int, width: int, input_config: InputConfig) -> tuple[float, float]:
    """(sy, sx) of the evaluation resize of a height x width image."""
    if input_config.resize == 'square':
        h, w = input_config.image_size
        return h / height, w / width
    new_h, new_w = keep_aspect_size((height, width), input_config.short_side, input_config.max_side)
    return new_h / height, new_w / width


def input_boxes(records, input_config: InputConfig, max_images: int | None = None) -> np.ndarray:
    """The non-crowd boxes of ground-truth records (data.source.Source.ground_truth) in input
    pixels, [N, 4] xyxy, from the first `max_images` records."""
    out = []
    for record in itertools.islice(records, max_images):
        boxes = np.asarray(record['boxes'], np.float64).reshape(-1, 4)
        boxes = boxes[~np.asarray(record['is_crowd'], bool).reshape(-1)]
        sy, sx = input_scale(int(record['height']), int(record['width']), input_config)
        out.append(boxes * np.asarray([sx, sy, sx, sy]))
    return np.concatenate(out) if out else np.zeros((0, 4))


def summarize(source, split: str, input_config: InputConfig, max_images: int | None = None) -> dict:
    """The split's figures (module docstring), from its ground truth (no image decoded where
    the source reads annotations)."""
    counts, background, crowd, small, cut, over, sizes = [], 0, 0, 0, 0, 0, []
    for record in itertools.islice(source.ground_truth(split), max_images):
        is_crowd = np.asarray(record['is_crowd'], bool).reshape(-1)
        counts.append(len(is_crowd))
        background += len(is_crowd) == 0
        crowd += int(is_crowd.sum())
        h, w = int(record['height']), int(record['width'])
        sy, sx = input_scale(h, w, input_config)
        boxes = np.asarray(record['boxes'], np.float64).reshape(-1, 4)[~is_crowd]
        boxes = np.clip(boxes * [sx, sy, sx, sy], 0, [w * sx, h * sy, w * sx, h * sy])
        wh = boxes[:, 2:] - boxes[:, :2]
        kept = (wh >= input_config.min_box_size).all(axis=1)
        small += int((~kept).sum())
        beyond = max(0, int(kept.sum()) - input_config.max_boxes)
        cut, over = cut + beyond, over + (beyond > 0)
        sizes.append(np.sqrt(wh[kept].prod(axis=1))[: input_config.max_boxes])
    counts = np.asarray(counts)
    return {
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
        'cut_by_max_boxes': cut,
        'images_over_max_boxes': over,
        'min_box_size': input_config.min_box_size,
        'max_boxes': input_config.max_boxes,
        'box_sizes': np.concatenate(sizes) if sizes else np.zeros(0),
    }


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
