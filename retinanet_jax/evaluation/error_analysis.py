"""Why a detector misses: a confusion matrix and an error breakdown, from COCO-style ground
truth and detections (what coco_metrics.CocoEvaluator holds after an evaluation).

Inputs (both functions):
  coco_gt      a pycocotools COCO of the ground truth (coco_metrics.coco_ground_truth); boxes
               xywh in original image pixels; iscrowd=1 regions are never objects to find
  detections   float [n, 7] rows (image_id, x, y, w, h, score, category_id): pycocotools'
               loadRes order, xywh in original image pixels (CocoEvaluator.detections())
  image_ids    the images evaluated (an image with no detections still has objects to miss)
  category_ids the K classes, in label order (label k is category_ids[k])

confusion_matrix(...) -> (matrix int64 [K + 1, K + 1], errors per image {image_id: n})
  mmdetection's layout (tools/analysis_tools/confusion_matrix.py): row = ground-truth class,
  with a last row for false positives (detections of no object); column = predicted class, with
  a last column for missed objects; detections with score >= score_threshold, a match at IoU >=
  iou. One deliberate difference: each object counts exactly once. mmdetection adds a cell for
  every detection that overlaps an object (an object found twice counts twice, an object found
  as the wrong class also counts as missed); here detections claim objects one to one, in two
  passes: first each detection, best score first, the free object of its own class it overlaps
  most (COCO's matching: the diagonal is the objects COCO finds), then each detection left,
  best score first, the free object of another class it overlaps most (a class confusion). So
  the first K rows sum to the number of (non-crowd) objects and a duplicate counts as a false
  positive. A detection that claims no object but covers a crowd region of its class (COCO's
  crowd IoU: intersection / detection area >= iou) is ignored, as COCO ignores it. The errors
  of an image: its off-diagonal cells.

tide_errors(...) -> {'AP50': {category: AP}, 'dAP': {error: {category: dAP}}, 'mAP_dAP':
                     {error: dAP}, 'counts': {error: {category: n}}}
  TIDE's error types and oracle fixes (Bolya et al., "TIDE: A General Toolbox for Identifying
  Object Detection Errors", ECCV 2020; dbolya/tide, tidecv/quantify.py and errors/), at
  foreground IoU `iou` (0.5) and background IoU `background_iou` (0.1). Every false positive
  is, in TIDE's order of tests:
    loc   its best IoU with an object of its class is in [background_iou, iou]
    cls   its best IoU with an object of another class is >= iou
    dupe  its best IoU with an object of its class already found is >= iou
    bkg   its best IoU with any object is <= background_iou
    both  anything else (the wrong class and poorly placed)
  and every object no detection found and no cls / loc error could have found is `miss`.
  dAP of an error type = the AP with every error of that type fixed by TIDE's oracle (loc: the
  best-scoring one per object becomes a true positive, the others removed; cls: likewise, in the
  object's class; dupe, bkg, both: removed; miss: the object removed from the count), minus the
  AP as it is, floored at 0 as TIDE does. One departure: TIDE's own AP and matching are replaced
  by pycocotools' (the same greedy matching, crowd regions and 101-point precision; the best
  `max_detections` per image and class, where TIDE keeps them per image: the same whenever
  post-processing keeps no more than that per image), so the AP that the dAPs start from is
  exactly `evaluate`'s AP50, per class. Two consequences in the averages: they are over the
  classes with objects, as COCO's mAP (TIDE also averages in classes with detections and no
  objects, at AP 0); and a class whose every object is missed and unfixable has nothing left
  to find once misses are fixed: AP 1 if it has no false positives, else 0 (TIDE drops it from
  the mean). Values are fractions of 1, like the AP (TIDE prints them x100).
"""

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

ERROR_TYPES = ('cls', 'loc', 'both', 'dupe', 'bkg', 'miss')


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _iou(dets_xywh, objects_xywh, crowd: bool = False) -> np.ndarray:
    """pycocotools' box IoU [D, G] (crowd: intersection / detection area), empty-safe."""
    d = np.asarray(dets_xywh, np.float64).reshape(-1, 4)
    g = np.asarray(objects_xywh, np.float64).reshape(-1, 4)
    if not len(d) or not len(g):
        return np.zeros((len(d), len(g)))
    return np.asarray(mask_utils.iou(d, g, [crowd] * len(g))).reshape(len(d), len(g))


def _objects_by_image(coco_gt) -> dict:
    """{image_id: (xywh [G, 4], category [G], crowd [G] bool)} from a pycocotools COCO."""
    out = {}
    for image_id in coco_gt.getImgIds():
        anns = coco_gt.imgToAnns.get(image_id, [])
        out[image_id] = (
            np.asarray([a['bbox'] for a in anns], np.float64).reshape(-1, 4),
            np.asarray([a['category_id'] for a in anns], np.int64),
            np.asarray([bool(a.get('iscrowd', 0)) for a in anns], bool),
        )
    return out


def confusion_matrix(
    coco_gt,
    detections: np.ndarray,
    image_ids,
    category_ids,
    *,
    iou: float = 0.5,
    score_threshold: float = 0.3,
) -> tuple[np.ndarray, dict[int, int]]:
    """The confusion matrix and each image's error count (module docstring)."""
    k = len(category_ids)
    label_of = {int(c): i for i, c in enumerate(category_ids)}
    matrix = np.zeros((k + 1, k + 1), np.int64)
    rows = np.asarray(detections, np.float64).reshape(-1, 7)
    rows = rows[rows[:, 5] >= score_threshold]
    objects = _objects_by_image(coco_gt)
    errors = {}
    for image_id in image_ids:
        boxes, cats, crowd = objects[int(image_id)]
        dets = rows[rows[:, 0] == image_id]
        dets = dets[np.argsort(-dets[:, 5], kind='stable')]
        labels = np.asarray([label_of[int(c)] for c in dets[:, 6]], np.int64)
        truth = np.asarray([label_of[int(c)] for c in cats[~crowd]], np.int64)
        overlaps = _iou(dets[:, 1:5], boxes[~crowd])
        own_crowd = cats[crowd][None, :] == dets[:, 6][:, None]  # COCO: a crowd of its class
        covers_crowd = ((_iou(dets[:, 1:5], boxes[crowd], crowd=True) >= iou) & own_crowd).any(1)
        found = np.zeros(len(truth), bool)
        claimed = np.full(len(labels), -1)
        before = matrix.copy()
        for same_class in (True, False):  # as COCO first, then confusions among what is left
            for d, label in enumerate(labels):
                free = (overlaps[d] >= iou) & ~found
                if same_class:
                    free &= truth == label
                if claimed[d] < 0 and free.any():
                    claimed[d] = int(np.argmax(np.where(free, overlaps[d], -1.0)))
                    found[claimed[d]] = True
        for d, label in enumerate(labels):
            if claimed[d] >= 0:
                matrix[truth[claimed[d]], label] += 1
            elif not covers_crowd[d]:
                matrix[k, label] += 1
        np.add.at(matrix, (truth[~found], k), 1)
        diff = matrix - before
        errors[int(image_id)] = int(diff.sum() - np.trace(diff))
    return matrix, errors


def _evaluated_images(coco_gt, coco_dt, image_ids, iou: float, max_detections: int):
    """pycocotools' per-image, per-class matching at one IoU over all areas: its evalImgs
    (None-free), in its accumulation order (class, then image)."""
    evaluator = COCOeval(coco_gt, coco_dt, 'bbox')
    p = evaluator.params
    p.imgIds = sorted(int(i) for i in image_ids)
    p.iouThrs = np.asarray([iou], np.float64)
    p.maxDets = [max_detections]
    p.areaRng, p.areaRngLbl = [[0.0, 1e10]], ['all']
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    return [e for e in evaluator.evalImgs if e is not None], p.recThrs


def average_precision(scores, true, num_objects: int, recall_thresholds) -> float:
    """pycocotools' interpolated AP of detections (already in its concatenation order) at one
    IoU: the precision envelope read at each recall threshold (0 past the last recall)."""
    if num_objects == 0:
        return -1.0
    if not len(scores):
        return 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind='mergesort')
    true = np.asarray(true, bool)[order]
    tp, fp = np.cumsum(true).astype(float), np.cumsum(~true).astype(float)
    recall, precision = tp / num_objects, tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    where = np.searchsorted(recall, recall_thresholds, side='left')
    q = np.where(where < len(precision), precision[np.minimum(where, len(precision) - 1)], 0.0)
    return float(np.mean(q))


def tide_errors(
    coco_gt,
    detections: np.ndarray,
    image_ids,
    category_ids,
    *,
    iou: float = 0.5,
    background_iou: float = 0.1,
    max_detections: int = 100,
) -> dict:
    """TIDE's error breakdown per class, over pycocotools' matching (module docstring)."""
    rows = np.asarray(detections, np.float64).reshape(-1, 7)
    coco_dt = _load_results(coco_gt, rows)
    evaluated, recall_thresholds = _evaluated_images(
        coco_gt, coco_dt, image_ids, iou, max_detections
    )
    dets, objects = _matches(evaluated, coco_gt, coco_dt)
    kind, target, fixed_by = _classify(dets, objects, iou, background_iou)
    missed = objects['used'] | np.isin(objects['id'], list(fixed_by))
    missed = ~missed
    categories = [int(c) for c in category_ids]
    num_objects = {c: int(np.sum(objects['category'] == c)) for c in categories}
    base = _class_aps(dets, dets['true'], dets['category'], num_objects, recall_thresholds)
    result = {'AP50': base, 'dAP': {}, 'mAP_dAP': {}, 'counts': {}}
    with_objects = [c for c in categories if num_objects[c] > 0]
    for error in ERROR_TYPES:
        keep, true, category = np.ones(len(kind), bool), dets['true'].copy(), dets['category']
        objects_left = dict(num_objects)
        if error == 'miss':
            for c in categories:
                objects_left[c] -= int(np.sum(missed & (objects['category'] == c)))
            count = {c: int(np.sum(missed & (objects['category'] == c))) for c in categories}
        else:
            mine = kind == error
            count = {c: int(np.sum(mine & (dets['category'] == c))) for c in categories}
            keep &= ~mine
            if error in ('cls', 'loc'):  # the best-scoring error per object becomes its match
                winners = np.asarray(sorted(fixed_by.values()), np.int64)
                winners = winners[kind[winners] == error]
                keep[winners], true[winners] = True, True
                if error == 'cls':
                    category = category.copy()
                    category[winners] = objects['category'][target[winners]]
        aps = _class_aps(
            {k: v[keep] for k, v in dets.items()},
            true[keep],
            category[keep],
            objects_left,
            recall_thresholds,
            empty_is_perfect=True,
        )
        result['dAP'][error] = {c: max(aps[c] - base[c], 0.0) for c in with_objects}
        result['counts'][error] = count
        gain = np.mean([aps[c] for c in with_objects]) - np.mean([base[c] for c in with_objects])
        result['mAP_dAP'][error] = max(float(gain), 0.0) if with_objects else 0.0
    return result


def _load_results(coco_gt, rows: np.ndarray):
    from pycocotools.coco import COCO

    if len(rows):
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(rows)
    empty = COCO()
    empty.dataset = dict(coco_gt.dataset, annotations=[])
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty


def _matches(evaluated, coco_gt, coco_dt) -> tuple[dict, dict]:
    """Flat tables of pycocotools' matching: every detection it scored (not the ignored ones:
    matched to a crowd region), in its accumulation order, and every non-crowd object."""
    d = {k: [] for k in ('id', 'score', 'true', 'image', 'category')}
    o = {k: [] for k in ('id', 'used', 'image', 'category')}
    for e in evaluated:
        scored = ~np.asarray(e['dtIgnore'], bool).reshape(-1)
        matched = np.asarray(e['dtMatches']).reshape(-1)[scored]
        columns = (np.asarray(e['dtIds'])[scored], np.asarray(e['dtScores'])[scored], matched > 0)
        objects = ~np.asarray(e['gtIgnore'], bool).reshape(-1)
        found = np.asarray(e['gtMatches']).reshape(-1)[objects] > 0
        for table, values in ((d, columns), (o, (np.asarray(e['gtIds'])[objects], found))):
            n = len(values[0])
            columns = (*values, [e['image_id']] * n, [e['category_id']] * n)
            for key, column in zip(table, columns, strict=True):
                table[key].extend(column)
    types = {'score': np.float64, 'true': bool, 'used': bool}
    dets = {k: np.asarray(v, types.get(k, np.int64)) for k, v in d.items()}
    objects = {k: np.asarray(v, types.get(k, np.int64)) for k, v in o.items()}
    dets['xywh'] = _boxes(coco_dt, dets['id'])
    objects['xywh'] = _boxes(coco_gt, objects['id'])
    return dets, objects


def _boxes(coco, ids) -> np.ndarray:
    return np.asarray([coco.anns[int(i)]['bbox'] for i in ids], np.float64).reshape(-1, 4)


def _classify(dets, objects, iou: float, background_iou: float):
    """Each false positive's TIDE type (module docstring) and, for cls / loc, the object (an
    index into `objects`) it would have found; and {object id: detection index} of the
    best-scoring cls / loc error of each object not found, the one its fix makes a match."""
    kind = np.full(len(dets['id']), '', object)
    target = np.full(len(dets['id']), -1, np.int64)
    best = {}  # object index -> (score, detection index)
    false = np.flatnonzero(~dets['true'])
    for image in np.unique(dets['image'][false]):
        mine = false[dets['image'][false] == image]
        mine = mine[np.argsort(-dets['score'][mine], kind='stable')]
        members = np.flatnonzero(objects['image'] == image)
        overlaps = _iou(dets['xywh'][mine], objects['xywh'][members])
        same = dets['category'][mine][:, None] == objects['category'][members][None, :]
        used = objects['used'][members][None, :]
        for row, d in enumerate(mine):
            kind[d], j = _error_type(overlaps[row], same[row], used[0], iou, background_iou)
            if j is not None:
                target[d] = members[j]
                score = dets['score'][d]
                if not used[0, j] and best.get(members[j], (-1.0,))[0] < score:
                    best[members[j]] = (score, d)
    return kind, target, {objects['id'][j]: d for j, (_, d) in best.items()}


def _error_type(overlaps, same, used, iou: float, background_iou: float):
    """(TIDE type, the object index for cls / loc) of one false positive."""
    if not len(overlaps):
        return 'bkg', None
    own = np.where(same, overlaps, 0.0)
    j = int(np.argmax(own))
    if background_iou <= own[j] <= iou:
        return 'loc', j
    other = np.where(~same, overlaps, 0.0)
    j = int(np.argmax(other))
    if other[j] >= iou:
        return 'cls', j
    if np.max(np.where(same & used, overlaps, 0.0)) >= iou:
        return 'dupe', None
    if np.max(overlaps) <= background_iou:
        return 'bkg', None
    return 'both', None


def _class_aps(dets, true, category, num_objects, recall_thresholds, empty_is_perfect=False):
    """{category: AP} of scored detections (in pycocotools' order) against object counts."""
    out = {}
    for c, n in num_objects.items():
        mine = category == c
        if n == 0 and empty_is_perfect:
            out[c] = 0.0 if np.any(~true[mine]) else 1.0
            continue
        out[c] = average_precision(dets['score'][mine], true[mine], n, recall_thresholds)
    return out
