"""PASCAL VOC's own detection metric, AP at IoU > 0.5 (the VOC devkit's, and detectron2's
PascalVOCDetectionEvaluator's): 11-point interpolation on VOC 2007, the area under the
precision envelope on VOC 2010 and later. Used by coco_metrics.CocoEvaluator on VOC sources.
"""

import numpy as np


def voc_ap50(
    rows: np.ndarray, ground_truth: dict, image_ids: list[int], eleven_point: bool = True
) -> float:
    """PASCAL VOC's detection metric: AP at IoU > 0.5, averaged over the categories that have
    ground truth, as the VOC devkit (and detectron2's PascalVOCDetectionEvaluator) computes it.

    rows: [n, 7] detections (image_id, x, y, w, h, score, category_id); ground_truth: a COCO
    dict whose 'iscrowd' marks VOC's 'difficult' objects, which are neither found nor missed.
    Per category, detections in descending score are matched greedily to the unmatched ground
    truth of highest IoU in their image; a second detection of a found object is a false
    positive. eleven_point: VOC 2007's mean of the best precision at recall >= 0, 0.1, ..., 1;
    else the area under the precision envelope (VOC 2010+). Boxes are continuous pixel
    coordinates (no +1 in widths, unlike the 2007 devkit's integer pixels).
    """
    images = set(image_ids)
    gt = [a for a in ground_truth['annotations'] if a['image_id'] in images]
    aps = []
    for category in sorted({c['id'] for c in ground_truth['categories']}):
        objects = {}  # image id -> (xyxy [k, 4], difficult [k])
        for a in gt:
            if a['category_id'] == category:
                x, y, w, h = a['bbox']
                boxes, difficult = objects.setdefault(a['image_id'], ([], []))
                boxes.append([x, y, x + w, y + h])
                difficult.append(bool(a['iscrowd']))
        num_objects = sum(not d for _, ds in objects.values() for d in ds)
        if num_objects == 0:
            continue
        found = {i: np.zeros(len(b), bool) for i, (b, _) in objects.items()}
        dets = rows[(rows[:, 6] == category) & np.isin(rows[:, 0], list(images))]
        dets = dets[np.argsort(-dets[:, 5], kind='stable')]
        hits = []  # 1 true positive, 0 false positive; difficult matches are left out
        for image_id, x, y, w, h, _, _ in dets:
            if int(image_id) not in objects:
                hits.append(0)
                continue
            boxes, difficult = objects[int(image_id)]
            ious = _iou_one_to_many(np.array([x, y, x + w, y + h]), np.asarray(boxes))
            best = int(np.argmax(ious))
            if ious[best] <= 0.5:
                hits.append(0)
            elif difficult[best]:
                continue
            elif not found[int(image_id)][best]:
                found[int(image_id)][best] = True
                hits.append(1)
            else:
                hits.append(0)
        tp = np.cumsum(hits, dtype=np.float64)
        recall = tp / num_objects
        precision = tp / np.arange(1, len(hits) + 1) if hits else tp
        aps.append(_average_precision(recall, precision, eleven_point))
    return float(np.mean(aps)) if aps else -1.0


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with [k, 4] xyxy boxes (numpy; the host-side evaluation loop)."""
    wh = np.clip(np.minimum(box[2:], boxes[:, 2:]) - np.maximum(box[:2], boxes[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
    return np.where(area > 0, inter / np.where(area > 0, area, 1), 0.0)


def _average_precision(recall: np.ndarray, precision: np.ndarray, eleven_point: bool) -> float:
    if eleven_point:
        return float(
            np.mean([precision[recall >= t].max(initial=0.0) for t in np.linspace(0, 1, 11)])
        )
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # the precision envelope
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))
