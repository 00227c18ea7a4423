"""COCO-style box evaluation over pycocotools (the official COCO API).

  evaluator = CocoEvaluator(ground_truth, label_map)    # ground_truth: a COCO json dict
  evaluator.add_batch(detections, batch)                # numpy, per process
  metrics = evaluator.evaluate()                        # {'AP': ..., 'AP50': ..., ...}

`detections`: 'boxes' [B, D, 4] xyxy in *original* image pixels (postprocess.boxes_to_original),
'scores' [B, D], 'labels' [B, D] contiguous, 'valid' [B, D]. `batch` supplies 'image_id' [B]
and 'valid' [B] (padding examples are ignored). Every image seen is evaluated, with or without
detections. Labels map back to dataset category ids through the label map. With several JAX
processes, `evaluate` gathers every process's detections first and all processes get the same
numbers. Ground truth (crowd regions included) comes from the source: `coco_ground_truth`.
"""

import contextlib
import io

import numpy as np

from retinanet_jax.data.label_maps import LabelMap

STAT_NAMES = (
    'AP',
    'AP50',
    'AP75',
    'APs',
    'APm',
    'APl',
    'AR1',
    'AR10',
    'AR100',
    'ARs',
    'ARm',
    'ARl',
)


class CocoEvaluator:
    def __init__(
        self,
        ground_truth: dict,
        label_map: LabelMap,
        detection_label_map: LabelMap | None = None,
        voc_ap50: str | None = None,
    ):
        """`label_map`: the dataset's; `detection_label_map`: the model's, where it differs
        (torchvision's 91 COCO labels on COCO). Detections of categories the ground truth does
        not have (e.g. 'N/A') are ignored by pycocotools. `voc_ap50` '11_point' (VOC 2007) or
        'area' (VOC 2010+) adds 'VOC_AP50', PASCAL VOC's own metric (see `voc_ap50`)."""
        from pycocotools.coco import COCO

        if voc_ap50 not in (None, '11_point', 'area'):
            raise ValueError(f"voc_ap50 must be None, '11_point' or 'area', got {voc_ap50!r}")
        self.voc_ap50 = voc_ap50
        self.label_map = detection_label_map or label_map
        self.coco_gt = COCO()
        self.coco_gt.dataset = ground_truth
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco_gt.createIndex()
        self.reset()

    def reset(self) -> None:
        self._rows = []  # [n, 7]: image_id, x, y, w, h, score, category_id (pycocotools' order)
        self._image_ids = []

    def add_batch(self, detections: dict, batch: dict) -> None:
        category_ids = np.asarray(self.label_map.category_ids)
        examples = np.asarray(batch['valid'], bool)
        image_ids = np.asarray(batch['image_id'])[examples]
        self._image_ids.extend(int(i) for i in image_ids)
        keep = np.asarray(detections['valid'], bool)[examples]
        boxes = np.asarray(detections['boxes'], np.float64)[examples][keep]
        labels = np.asarray(detections['labels'])[examples][keep]
        scores = np.asarray(detections['scores'], np.float64)[examples][keep]
        ids = np.broadcast_to(image_ids[:, None], keep.shape)[keep]
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        rows = np.column_stack([ids, xywh, scores, category_ids[labels]])
        self._rows.append(rows.reshape(-1, 7))

    def _gathered(self) -> tuple[np.ndarray, list[int]]:
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, 7))
        ids = np.asarray(self._image_ids, np.int64)
        import jax

        if jax.process_count() == 1:
            return rows, ids.tolist()
        from jax.experimental import multihost_utils

        counts = multihost_utils.process_allgather(np.array([len(rows), len(ids)]))
        pad_rows, pad_ids = counts.max(0)
        all_rows = multihost_utils.process_allgather(
            np.resize(rows, (pad_rows, 7)) if len(rows) else np.zeros((pad_rows, 7))
        )
        all_ids = multihost_utils.process_allgather(
            np.resize(ids, pad_ids) if len(ids) else np.zeros(pad_ids, np.int64)
        )
        rows = np.concatenate([r[:n] for r, n in zip(all_rows, counts[:, 0], strict=True)])
        ids = np.concatenate([i[:n] for i, n in zip(all_ids, counts[:, 1], strict=True)])
        return rows, ids.tolist()

    def evaluate(self, verbose: bool = False) -> dict[str, float]:
        """The 12 COCO stats (-1 where undefined, as pycocotools) over every image seen."""
        from pycocotools.cocoeval import COCOeval

        rows, image_ids = self._gathered()
        unknown = sorted(set(image_ids) - set(self.coco_gt.getImgIds()))
        if unknown:
            raise ValueError(f'evaluated image ids not in the ground truth: {unknown[:10]}')
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            coco_dt = self.coco_gt.loadRes(rows) if len(rows) else _empty_results(self.coco_gt)
            evaluator = COCOeval(self.coco_gt, coco_dt, 'bbox')
            evaluator.params.imgIds = sorted(set(image_ids))
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        if verbose:
            print(out.getvalue())
        metrics = dict(zip(STAT_NAMES, (float(v) for v in evaluator.stats), strict=True))
        if self.voc_ap50:
            metrics['VOC_AP50'] = voc_ap50(
                rows, self.coco_gt.dataset, sorted(set(image_ids)), self.voc_ap50 == '11_point'
            )
        return metrics


def make_evaluator(source, split: str, detection_label_map=None) -> CocoEvaluator:
    """A COCO evaluator whose ground truth is the whole of `split` of `source` (a
    data.sources.Source; on every process: `evaluate` gathers every process's detections before
    scoring them). `detection_label_map`: the model's, where it differs from the dataset's. VOC
    sources add VOC_AP50 in their own convention (`source.voc_ap50`)."""
    return CocoEvaluator(
        coco_ground_truth(source.ground_truth(split), source.label_map),
        source.label_map,
        detection_label_map,
        voc_ap50=source.voc_ap50,
    )


def _empty_results(coco_gt):
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {
        'images': coco_gt.dataset['images'],
        'categories': coco_gt.dataset['categories'],
        'annotations': [],
    }
    empty.createIndex()
    return empty


def coco_ground_truth(records, label_map: LabelMap) -> dict:
    """A COCO json dict from ground-truth records (data.sources.Source.ground_truth: dicts with
    'image_id', 'height', 'width', 'boxes' xyxy original pixels, 'labels', 'is_crowd' and
    optionally 'area'); crowd boxes are kept with iscrowd=1. Labels must be in
    [0, num_classes) and image ids unique: ValueError naming the image otherwise."""
    images, annotations, seen = [], [], set()
    num_classes = label_map.num_classes
    for r in records:
        image_id = int(r['image_id'])
        if image_id in seen:
            raise ValueError(f'ground truth: image id {image_id} appears twice')
        seen.add(image_id)
        images.append({'id': image_id, 'height': int(r['height']), 'width': int(r['width'])})
        boxes = np.asarray(r['boxes'], np.float64).reshape(-1, 4)
        labels = np.asarray(r['labels']).reshape(-1)
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if len(bad):
            raise ValueError(
                f'ground truth of image id {image_id}: label {int(bad[0])} outside '
                f'[0, {num_classes})'
            )
        areas = r.get('area')
        if areas is None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for box, label, crowd, area in zip(boxes, labels, r['is_crowd'], areas, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    'id': len(annotations) + 1,
                    'image_id': image_id,
                    'category_id': int(label_map.category_ids[int(label)]),
                    'bbox': [x1, y1, x2 - x1, y2 - y1],
                    'area': float(area),
                    'iscrowd': int(bool(crowd)),
                }
            )
    categories = [
        {'id': int(c), 'name': n}
        for n, c in zip(label_map.names, label_map.category_ids, strict=True)
    ]
    return {'images': images, 'annotations': annotations, 'categories': categories}


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


def format_table(metrics: dict[str, float]) -> str:
    """The stats as a two-row text table."""
    names = [n for n in (*STAT_NAMES, 'VOC_AP50') if n in metrics]
    header = ' '.join(f'{n:>6}' for n in names)
    return header + '\n' + ' '.join(f'{metrics[n]:6.3f}' for n in names)
