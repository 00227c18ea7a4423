"""Precision, recall and F1 at one IoU and one score threshold, per class and over all classes,
and the score threshold that maximises F1: the numbers field users read (DeepForest reports
box precision and recall at an IoU; ultralytics reports P, R and F1), beside COCO's AP.

  metrics = field_metrics(ground_truth, rows, image_ids, label_map, iou=0.5, score=0.3)
  {'P', 'R', 'F1',                   over all classes (micro: every class's counts summed)
   'best_F1', 'best_F1_score',       the highest F1 over every score threshold, and that score
   'P/<class>', 'R/<class>', 'F1/<class>'}    per class with ground truth or detections

ground_truth: a COCO json dict (coco_metrics.coco_ground_truth); rows: pycocotools detection
rows [n, 7] (image_id, x, y, w, h, score, category_id), original pixels. Matching is COCO's:
per image and class, detections best score first each take the unmatched object of highest
IoU >= `iou`; a detection on a crowd region (COCO iscrowd, VOC difficult; IoU there is the
intersection over the detection's area, as pycocotools) is neither a hit nor a false positive,
and crowd regions are not counted in recall. Greedy matching by score does not depend on the
threshold (a detection's match is decided by the better-scored ones only), so one matching
serves every threshold. P is 0 with no detection kept, R is 0 with no object, F1 is 0 where
P + R is 0.
"""

import numpy as np

NAMES = ('P', 'R', 'F1', 'best_F1', 'best_F1_score')


def metric_names(class_names) -> list[str]:
    """The keys field_metrics gives (per class: every class named, in order)."""
    per_class = [f'{stat}/{name}' for name in class_names for stat in ('P', 'R', 'F1')]
    return [*NAMES, *per_class]


def field_metrics(ground_truth: dict, rows, image_ids, label_map, iou=0.5, score=0.3) -> dict:
    """The module docstring's metrics of detections `rows` on the images `image_ids`."""
    rows = np.asarray(rows, np.float64).reshape(-1, 7)
    hits, counted, scores, categories, objects = match(ground_truth, rows, image_ids, iou)
    kept = scores >= score
    total = sum(objects.values())
    out = dict(
        zip(('P', 'R', 'F1'), _prf(hits[kept].sum(), counted[kept].sum(), total), strict=True)
    )
    out['best_F1'], out['best_F1_score'] = best_f1(hits, counted, scores, total)
    for name, category in zip(label_map.names, label_map.category_ids, strict=True):
        mine = kept & (categories == category)
        p, r, f1 = _prf(hits[mine].sum(), counted[mine].sum(), objects.get(int(category), 0))
        out |= {f'P/{name}': p, f'R/{name}': r, f'F1/{name}': f1}
    return out


def _prf(tp: int, detections: int, objects: int) -> tuple[float, float, float]:
    p = tp / detections if detections else 0.0
    r = tp / objects if objects else 0.0
    return float(p), float(r), float(2 * p * r / (p + r)) if p + r else 0.0


def best_f1(hits, counted, scores, objects: int) -> tuple[float, float]:
    """(the highest F1 over the thresholds 'score >= s' for every detection score s, that s;
    the higher s of a tie); (0, 1) with no detection."""
    if not len(scores) or objects == 0:
        return 0.0, 1.0
    order = np.argsort(-scores, kind='stable')
    tp, n = np.cumsum(hits[order]), np.cumsum(counted[order])
    last = np.r_[scores[order][1:] != scores[order][:-1], True]  # the end of each score's run
    tp, n, s = tp[last], n[last], scores[order][last]
    p = np.divide(tp, n, out=np.zeros(len(tp)), where=n > 0)
    r = tp / objects
    f1 = np.divide(2 * p * r, p + r, out=np.zeros(len(tp)), where=(p + r) > 0)
    best = int(np.flatnonzero(f1 == f1.max())[0])  # scores fall: the first is the highest s
    return float(f1[best]), float(s[best])


def match(ground_truth: dict, rows: np.ndarray, image_ids, iou: float):
    """(hits bool [n], counted bool [n] (not on a crowd region), scores [n], category ids [n],
    {category id: objects counted in recall}) of the detection rows on `image_ids`."""
    seen = set(int(i) for i in image_ids)
    truth = {}
    for a in ground_truth['annotations']:
        if a['image_id'] in seen:
            truth.setdefault((a['image_id'], a['category_id']), []).append(a)
    objects = {}
    for (_, category), anns in truth.items():
        objects[category] = objects.get(category, 0) + sum(not a.get('iscrowd') for a in anns)
    hits, counted = np.zeros(len(rows), bool), np.ones(len(rows), bool)
    image, category = rows[:, 0].astype(np.int64), rows[:, 6].astype(np.int64)
    order = np.lexsort((-rows[:, 5], category, image))  # by image, class, best score first
    starts = np.flatnonzero(
        np.r_[True, (np.diff(image[order]) != 0) | (np.diff(category[order]) != 0)]
    )
    for mine in np.split(order, starts[1:]) if len(order) else []:
        anns = truth.get((int(image[mine[0]]), int(category[mine[0]])), [])
        if not anns:
            continue
        gt = np.asarray([a['bbox'] for a in anns], np.float64)
        crowd = np.asarray([bool(a.get('iscrowd')) for a in anns])
        overlaps = _iou(rows[mine, 1:5], gt, crowd)
        taken = np.zeros(len(anns), bool)
        for d, row in enumerate(mine):
            free = np.where(~taken & ~crowd & (overlaps[d] >= iou), overlaps[d], -1.0)
            if free.max() >= iou:
                hits[row], taken[int(np.argmax(free))] = True, True
            elif (overlaps[d][crowd] >= iou).any():
                counted[row] = False
    return hits, counted, rows[:, 5], rows[:, 6].astype(np.int64), objects


def _iou(dets: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """[D, G] IoU of xywh boxes; against a crowd region, intersection over the detection's area
    (pycocotools' maskUtils.iou with iscrowd)."""
    d1, d2 = dets[:, None, :2], dets[:, None, :2] + dets[:, None, 2:]
    g1, g2 = gt[None, :, :2], gt[None, :, :2] + gt[None, :, 2:]
    inter = np.prod(np.clip(np.minimum(d2, g2) - np.maximum(d1, g1), 0, None), axis=-1)
    area_d, area_g = np.prod(dets[:, 2:], -1)[:, None], np.prod(gt[:, 2:], -1)[None]
    union = np.where(crowd[None], area_d, area_d + area_g - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
