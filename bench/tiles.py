"""Sliced inference on a synthetic large scene (inference/tiling.py, tile_merge.py): the demo's
shapes at native size, 23 x 23 test examples of 128 px pasted into one 2,944 px image (1,342
objects, 11-76 px). A trained demo run predicts the scene by 128-px windows (its scale) at
overlaps of 0.2 and 0.6; against it, each example predicted as its own image. Reported: AP and
AP50 of both (pycocotools, up to 10,000 detections), duplicate detections of one object (pairs
of IoU > 0.5 with it and each other, score >= 0.3), fragments (a detection of the object's class
mostly inside it, IoU 0.1-0.5, score >= 0.3; the model makes some on its own images too) and
wall time.

  python train.py --config=configs/shapes.py --workdir=/tmp/shapes   # the demo run, first
  RETINANET_JAX_DEMO_RUN=/tmp/shapes python -m bench tiles

Then the race against SAHI's get_sliced_prediction with torchvision's RetinaNet on a 4,096-px
image (bench/tile_race.py).
"""

import os
import time

import numpy as np

OWN_TABLE = True
GRID, PATCH = 23, 128


def coco_ap(gt_boxes, gt_labels, boxes, scores, labels) -> tuple[float, float]:
    """(AP, AP50) of one image's detections (xyxy) against its ground truth (pycocotools, up
    to 10,000 detections: the scene holds 1,342 objects)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    h, w = GRID * PATCH, GRID * PATCH
    anns = [
        {
            'id': k + 1,
            'image_id': 1,
            'category_id': int(lab) + 1,
            'bbox': [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            'area': float((b[2] - b[0]) * (b[3] - b[1])),
            'iscrowd': 0,
        }
        for k, (b, lab) in enumerate(zip(gt_boxes, gt_labels, strict=True))
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {
            'images': [{'id': 1, 'height': h, 'width': w}],
            'annotations': anns,
            'categories': [{'id': k + 1, 'name': str(k)} for k in range(3)],
        }
        gt.createIndex()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        rows = np.column_stack([np.ones(len(boxes)), xywh, scores, labels + 1])
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
    """(the scene uint8 [2944, 2944, 3], its boxes [n, 4] xyxy, labels [n], the examples)."""
    from retinanet_jax.data import shapes

    image = np.zeros((GRID * PATCH, GRID * PATCH, 3), np.uint8)
    boxes, labels, examples = [], [], []
    for k in range(GRID * GRID):
        e = shapes.generate_example(k, 'test', image_size=PATCH)
        y, x = divmod(k, GRID)
        image[y * PATCH : (y + 1) * PATCH, x * PATCH : (x + 1) * PATCH] = e['image']
        boxes.append(np.asarray(e['boxes'], np.float32).reshape(-1, 4) + [x * PATCH, y * PATCH] * 2)
        labels.append(np.asarray(e['labels']))
        examples.append(e)
    return image, np.concatenate(boxes), np.concatenate(labels), examples


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


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> dict:
    del device
    from retinanet_jax.inference import load_predictor, tiling

    run_dir = os.environ.get('RETINANET_JAX_DEMO_RUN', '/tmp/shapes')
    predictor = load_predictor(run_dir)
    image, gt_boxes, gt_labels, examples = scene()
    results = {}
    start = time.time()
    own = [[], [], []]
    for k, dets in enumerate(predictor.predict_images([e['image'] for e in examples], 8)):
        y, x = divmod(k, GRID)
        keep = dets['valid']
        own[0].append(dets['boxes'][keep] + [x * PATCH, y * PATCH] * 2)
        own[1].append(dets['scores'][keep])
        own[2].append(dets['labels'][keep])
    own = [np.concatenate(o) for o in own]
    seconds = time.time() - start
    results['own images'] = (
        *coco_ap(gt_boxes, gt_labels, *own),
        *counts(*own, gt_boxes, gt_labels),
        seconds,
        len(examples),
    )
    for overlap in (0.2,) if quick else (0.2, 0.6):
        start = time.time()
        (d,) = tiling.predict_tiled(predictor, [image], tiling.TileConfig(PATCH, overlap, 8))
        seconds = time.time() - start
        windows = len(tiling.tile_windows(image.shape[:2], PATCH, overlap))
        found = (d['boxes'], d['scores'], d['labels'])
        results[f'sliced, overlap {overlap}'] = (
            *coco_ap(gt_boxes, gt_labels, *found),
            *counts(*found, gt_boxes, gt_labels),
            seconds,
            windows,
        )
    print(f'scene {image.shape[0]}x{image.shape[1]}, {len(gt_boxes)} objects; model {run_dir}')
    print(f'{"":22s} {"AP":>6} {"AP50":>6} {"dup":>5} {"frag":>5} {"s":>6} {"images/windows":>14}')
    for name, (ap, ap50, dup, frag, s, n) in results.items():
        print(f'{name:22s} {ap:6.4f} {ap50:6.4f} {dup:5d} {frag:5d} {s:6.1f} {n:14d}')
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
