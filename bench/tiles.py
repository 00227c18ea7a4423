"""Sliced inference on a synthetic large scene (inference/tiling.py, tile_merge.py), built as a
user's large image is: small objects on one continuous background. The scene is 2,944 px a side:
one textured background (data/shapes.background) across it, and on it the shapes of 46 x 46
test examples of 64 px (1-4 objects each, 8-38 px), each example's shapes in its own 64-px cell
(a shape never crosses its cell's border). A trained demo run (128-px canvas) predicts it:

  - each object's own tile: the scene cut into the 23 x 23 aligned 128-px tiles (2 x 2 cells),
    each predicted as its own image, so no object is ever cut and nothing is merged;
  - sliced: 128-px windows at overlaps of 0.2 (26 px: objects larger than that are seen cut in
    some windows) and 0.35 (45 px: every object lies whole in a window), merged.

Reported: AP and AP50 (pycocotools, up to 10,000 detections), duplicate detections of one
object (pairs of IoU > 0.5 with it and each other, score >= 0.3), fragments (a detection of the
object's class mostly inside it, IoU 0.1-0.5, score >= 0.3; the model makes some on its own
tiles too) and wall time.

  python train.py --config=configs/shapes.py --workdir=/tmp/shapes   # the demo run, first
  RETINANET_JAX_DEMO_RUN=/tmp/shapes python -m bench tiles

Then the race against SAHI's get_sliced_prediction with torchvision's RetinaNet on a 4,096-px
image (bench/tile_race.py).
"""

import os
import time

import numpy as np

OWN_TABLE = True
GRID, CELL, TILE = 46, 64, 128  # the scene: 2,944 px; the demo model's canvas: 128 px


def coco_ap(gt_boxes, gt_labels, boxes, scores, labels) -> tuple[float, float]:
    """(AP, AP50) of the scene's detections (xyxy) against its ground truth (pycocotools, up
    to 10,000 detections an image). The scene is evaluated as its 23 x 23 aligned 128-px
    blocks, each an image holding the objects inside it and the detections centred in it:
    COCO pools the detections of all images by score, as of one image, but its matching loops
    over every (detection, object) pair of an image in Python, hours for the whole scene."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    blocks = GRID * CELL // TILE

    def block(b):  # the image id of each box: the block of its centre
        centre = np.clip((b[:, :2] + b[:, 2:]) / 2 // TILE, 0, blocks - 1).astype(int)
        return centre[:, 1] * blocks + centre[:, 0] + 1

    def xywh(b):
        return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)

    anns = [
        {
            'id': k + 1,
            'image_id': int(i),
            'category_id': int(lab) + 1,
            'bbox': [float(v) for v in box],
            'area': float(box[2] * box[3]),
            'iscrowd': 0,
        }
        for k, (i, box, lab) in enumerate(
            zip(block(gt_boxes), xywh(gt_boxes), gt_labels, strict=True)
        )
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {
            'images': [{'id': i + 1, 'height': TILE, 'width': TILE} for i in range(blocks**2)],
            'annotations': anns,
            'categories': [{'id': k + 1, 'name': str(k)} for k in range(3)],
        }
        gt.createIndex()
        rows = np.column_stack([block(boxes), xywh(boxes), scores, labels + 1])
        e = COCOeval(gt, gt.loadRes(rows), 'bbox')
        e.params.maxDets = [1, 10, 10000]
        e.evaluate()
        e.accumulate()
    p = e.eval['precision'][:, :, :, 0, -1]  # [iou, recall, class], all areas, most detections

    def mean(x):
        return float(np.mean(x[x > -1]))

    return mean(p), mean(p[0])


def iou(a, b):
    lo, hi = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / (area(a) + area(b) - inter), inter / np.maximum(area(b), 1e-9)


def scene():
    """(the scene uint8 [2944, 2944, 3], its boxes [n, 4] xyxy, labels [n]): see the module
    docstring."""
    from retinanet_jax.data import shapes

    image = shapes.background(np.random.default_rng([0, 3]), GRID * CELL)
    boxes, labels = [], []
    for k in range(GRID * GRID):
        e = shapes.generate_example(k, 'test', image_size=CELL, return_masks=True)
        y, x = divmod(k, GRID)
        drawn = e['masks'].any(axis=0)  # the shapes' pixels, the later ones on top
        image[y * CELL : (y + 1) * CELL, x * CELL : (x + 1) * CELL][drawn] = e['image'][drawn]
        boxes.append(e['boxes'] + np.float32([x, y, x, y]) * CELL)
        labels.append(e['labels'])
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, np.concatenate(boxes), np.concatenate(labels)


def counts(boxes, scores, labels, gt_boxes, gt_labels) -> tuple[int, int]:
    """(duplicate pairs, fragments) at score >= 0.3 (module docstring)."""
    strong = scores >= 0.3
    dup = frag = 0
    for g, lab in zip(gt_boxes, gt_labels, strict=True):
        mine = strong & (labels == lab)
        if not mine.any():
            continue
        o, ios = iou(g, boxes[mine])
        hits = boxes[mine][o > 0.5]
        for a in range(len(hits)):
            dup += int((iou(hits[a], hits[a + 1 :])[0] > 0.5).sum())
        frag += int(((o < 0.5) & (ios >= 0.5) & (o > 0.1)).sum())
    return dup, frag


def scene_check(predictor, overlaps=(0.2, 0.35)) -> dict:
    """{'own tiles' / 'sliced, overlap o': (AP, AP50, duplicates, fragments, seconds, tiles or
    windows)} of `predictor` on the scene (module docstring)."""
    from retinanet_jax.inference import tiling

    image, gt_boxes, gt_labels = scene()
    results = {}
    start = time.time()
    own = tiling.tile_windows(image.shape[:2], TILE, 0.0)  # aligned: no shape crosses them
    found = [[], [], []]
    tiles = [image[y0:y1, x0:x1] for y0, x0, y1, x1 in own]
    for (y0, x0, _, _), dets in zip(own, predictor.predict_images(tiles, 8), strict=True):
        keep = dets['valid']
        found[0].append(dets['boxes'][keep] + np.float32([x0, y0, x0, y0]))
        found[1].append(dets['scores'][keep])
        found[2].append(dets['labels'][keep])
    found = [np.concatenate(f) for f in found]
    seconds = time.time() - start
    results['own tiles'] = (
        *coco_ap(gt_boxes, gt_labels, *found),
        *counts(*found, gt_boxes, gt_labels),
        seconds,
        len(own),
    )
    for overlap in overlaps:
        start = time.time()
        (d,) = tiling.predict_tiled(predictor, [image], tiling.TileConfig(TILE, overlap, 8))
        seconds = time.time() - start
        windows = len(tiling.tile_windows(image.shape[:2], TILE, overlap))
        found = (d['boxes'], d['scores'], d['labels'])
        results[f'sliced, overlap {overlap}'] = (
            *coco_ap(gt_boxes, gt_labels, *found),
            *counts(*found, gt_boxes, gt_labels),
            seconds,
            windows,
        )
    print(f'scene {image.shape[0]}x{image.shape[1]}, {len(gt_boxes)} objects')
    print(f'{"":22s} {"AP":>6} {"AP50":>6} {"dup":>5} {"frag":>5} {"s":>6} {"tiles/windows":>13}')
    for name, (ap, ap50, dup, frag, s, n) in results.items():
        print(f'{name:22s} {ap:6.4f} {ap50:6.4f} {dup:5d} {frag:5d} {s:6.1f} {n:13d}')
    return results


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> dict:
    del device
    from retinanet_jax.inference import load_predictor

    run_dir = os.environ.get('RETINANET_JAX_DEMO_RUN', '/tmp/shapes')
    print(f'model: {run_dir}')
    results = scene_check(load_predictor(run_dir), (0.35,) if quick else (0.2, 0.35))
    from bench import tile_race

    raced = tile_race.race(quick, threads)
    names = ('AP', 'AP50', 'duplicates', 'fragments', 'seconds', 'inputs')
    return {
        'scene': {k: dict(zip(names, v, strict=True)) for k, v in results.items()},
        'race': {
            k: dict(zip(('seconds', 'windows_per_s', 'peak_rss_gib', 'detections'), v, strict=True))
            for k, v in raced.items()
        },
    }
