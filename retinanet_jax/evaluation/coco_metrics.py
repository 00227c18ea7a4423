"""COCO-style box evaluation over pycocotools (the official COCO API).

  evaluator = CocoEvaluator(ground_truth, label_map)    # ground_truth: a COCO json dict
  evaluator.add_batch(detections, batch)                # numpy, per process
  metrics = evaluator.metrics()                        # {'AP': ..., 'AP50': ..., ...}

`detections`: 'boxes' [B, D, 4] xyxy in *original* image pixels (postprocess.boxes_to_original),
'scores' [B, D], 'labels' [B, D] contiguous, 'valid' [B, D]. `batch` supplies 'image_id' [B]
and 'valid' [B] (padding examples are ignored). Every image seen is evaluated, with or without
detections. Labels map back to dataset category ids through the label map. With several JAX
processes, `evaluate` gathers every process's detections first and all processes get the same
numbers. Ground truth (crowd regions included) comes from the source: `coco_ground_truth`.

Checked, with the image id and the value named: a valid detection's label outside
[0, num_classes), a non-finite box or score, an image id the ground truth does not have.

Metrics (EvaluationConfig; the defaults are COCO's and give its 12 numbers):
  AP            mean precision over the IoU thresholds (0.50:0.05:0.95), every area, the most
                detections; AP50 / AP75 at IoU 0.5 / 0.75 (where those thresholds are set)
  APs APm APl   AP over the small / medium / large area ranges
  AR1 AR10 AR100  recall at each max_detections; ARs ARm ARl at the most detections
  AP/<class>, AP50/<class>, AP75/<class>   per category (as detectron2's COCOEvaluator)
  VOC_AP50      on VOC sources: PASCAL VOC's own AP50 (voc_metric.py)
  P R F1 best_F1 best_F1_score, P/<class> R/<class> F1/<class>   precision, recall and F1 at
                pr_iou and pr_score_threshold, and the best F1 over score thresholds
                (precision_recall.py)
-1 where a number is undefined (no ground truth of that kind), as pycocotools.
"""

import contextlib
import dataclasses
import functools
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retinanet_jax import sharding
from retinanet_jax.data.label_maps import LabelMap
from retinanet_jax.errors import UserError
from retinanet_jax.evaluation import precision_recall
from retinanet_jax.evaluation.voc_metric import voc_ap50

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
PER_CLASS = (('AP', None), ('AP50', 0.5), ('AP75', 0.75))  # (stat, IoU) of each class
COCO_AREAS = (
    ('all', 0.0, 1e10),
    ('small', 0.0, 32.0**2),
    ('medium', 32.0**2, 96.0**2),
    ('large', 96.0**2, 1e10),
)


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """pycocotools' parameters. Area ranges: (name, min area, max area); the first is 'all'."""

    iou_thresholds: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
    max_detections: tuple[int, ...] = (1, 10, 100)  # more for dense scenes: (1, 10, 1000)
    area_ranges: tuple[tuple[str, float, float], ...] = COCO_AREAS
    # Precision, recall and F1 (precision_recall.py) at this IoU and score threshold.
    pr_iou: float = 0.5
    pr_score_threshold: float = 0.3
    # Training's evaluation (and evaluate / analyze without --tile_size) by tile_size windows,
    # each at the model's scale (tiled_evaluation.py); 0: whole images on the canvas.
    tile_size: int = 0
    tile_overlap: float = 0.2

    def __post_init__(self):
        if not self.iou_thresholds or not all(0 < t < 1 for t in self.iou_thresholds):
            raise UserError(
                f'EvaluationConfig.iou_thresholds must be in (0, 1): {self.iou_thresholds}'
            )
        if not self.max_detections or min(self.max_detections) < 1:
            raise UserError(f'EvaluationConfig.max_detections must be >= 1: {self.max_detections}')
        if not self.area_ranges or self.area_ranges[0][0] != 'all':
            raise UserError("EvaluationConfig.area_ranges must start with ('all', 0, 1e10)")
        if not 0 < self.pr_iou < 1 or not 0 <= self.pr_score_threshold <= 1:
            raise UserError(
                'EvaluationConfig.pr_iou must be in (0, 1) and pr_score_threshold in [0, 1]: '
                f'{self.pr_iou}, {self.pr_score_threshold}'
            )
        if self.tile_size < 0 or not 0 <= self.tile_overlap <= 0.9:
            raise UserError(
                'EvaluationConfig.tile_size must be >= 0 (0: whole images) and tile_overlap in '
                f'[0, 0.9]: {self.tile_size}, {self.tile_overlap}'
            )


class CocoEvaluator:
    def __init__(
        self,
        ground_truth: dict,
        label_map: LabelMap,
        detection_label_map: LabelMap | None = None,
        voc_ap50: str | None = None,
        config: EvaluationConfig = EvaluationConfig(),
    ):
        """`label_map`: the dataset's; `detection_label_map`: the model's, where it differs
        (torchvision's 91 COCO labels on COCO). Detections of categories the ground truth does
        not have (e.g. 'N/A') are ignored by pycocotools. `voc_ap50` '11_point' (VOC 2007) or
        'area' (VOC 2010+) adds 'VOC_AP50', PASCAL VOC's own metric (voc_metric.py)."""

        if voc_ap50 not in (None, '11_point', 'area'):
            raise UserError(f"voc_ap50 must be None, '11_point' or 'area', got {voc_ap50!r}")
        self.voc_ap50 = voc_ap50
        self.config = config
        self.label_map = detection_label_map or label_map
        self.dataset_label_map = label_map
        self.coco_gt = COCO()
        self.coco_gt.dataset = ground_truth
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco_gt.createIndex()
        self._known_ids = set(self.coco_gt.getImgIds())
        self.reset()

    def reset(self) -> None:
        self._rows = []  # [n, 7]: image_id, x, y, w, h, score, category_id (pycocotools' order)
        self._image_ids = []

    def add_batch(self, detections: dict, batch: dict) -> None:
        category_ids = np.asarray(self.label_map.category_ids)
        examples = np.asarray(batch['valid'], bool)
        image_ids = np.asarray(batch['image_id'])[examples]
        unknown = [int(i) for i in image_ids if int(i) not in self._known_ids]
        if unknown:
            raise ValueError(f'evaluation: image id {unknown[0]} is not in the ground truth')
        self._image_ids.extend(int(i) for i in image_ids)
        keep = np.asarray(detections['valid'], bool)[examples]
        boxes = np.asarray(detections['boxes'], np.float64)[examples][keep]
        labels = np.asarray(detections['labels'])[examples][keep]
        scores = np.asarray(detections['scores'], np.float64)[examples][keep]
        ids = np.broadcast_to(image_ids[:, None], keep.shape)[keep]
        _check_detections(ids, boxes, labels, scores, len(category_ids))
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        rows = np.column_stack([ids, xywh, scores, category_ids[labels]])
        self._rows.append(rows.reshape(-1, 7))

    def detections(self) -> tuple[np.ndarray, list[int]]:
        """(every process's detections as pycocotools rows [n, 7]: image_id, x, y, w, h
        (original pixels), score, category_id; the image ids seen)."""
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, 7))
        ids = np.asarray(self._image_ids, np.int64)
        return sharding.gather_rows(rows), sharding.gather_rows(ids).tolist()

    def metrics(self, verbose: bool = False) -> dict[str, float]:
        """The stats (see the module docstring) over every image seen."""

        rows, image_ids = self.detections()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            coco_dt = self.coco_gt.loadRes(rows) if len(rows) else _empty_results(self.coco_gt)
            evaluator = COCOeval(self.coco_gt, coco_dt, 'bbox')
            p = evaluator.params
            p.imgIds = sorted(set(image_ids))
            p.iouThrs = np.asarray(self.config.iou_thresholds, np.float64)
            p.maxDets = list(self.config.max_detections)
            p.areaRng = [[lo, hi] for _, lo, hi in self.config.area_ranges]
            p.areaRngLbl = [name for name, _, _ in self.config.area_ranges]
            evaluator.evaluate()
            evaluator.accumulate()
        if verbose:
            print(out.getvalue())
        self.last_results, self.last_category_ids = evaluator.eval, [int(c) for c in p.catIds]
        metrics = coco_stats(evaluator.eval, self.config)
        metrics.update(self._per_class(evaluator.eval, self.last_category_ids))
        if self.voc_ap50:
            metrics['VOC_AP50'] = voc_ap50(
                rows, self.coco_gt.dataset, sorted(set(image_ids)), self.voc_ap50 == '11_point'
            )
        c = self.config
        labels = self.dataset_label_map
        return metrics | precision_recall.field_metrics(
            self.coco_gt.dataset, rows, image_ids, labels, c.pr_iou, c.pr_score_threshold
        )

    def pr_curves(self, iou: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{class name: (recall [101], precision [101])} of the last `metrics()` at IoU `iou`
        (all areas, the most detections), pycocotools' interpolated precision at its 101
        recall points; classes without ground truth are left out."""
        results, config = self.last_results, self.config
        t = int(np.argmin(np.abs(np.asarray(config.iou_thresholds) - iou)))
        if not np.isclose(config.iou_thresholds[t], iou):
            raise UserError(f'IoU {iou} is not one of config.iou_thresholds')
        recall = np.asarray(results['params'].recThrs)
        names = dict(
            zip(self.dataset_label_map.category_ids, self.dataset_label_map.names, strict=True)
        )
        curves = {}
        for k, category in enumerate(self.last_category_ids):
            precision = results['precision'][t, :, k, 0, -1]
            if (precision > -1).any():  # -1: no ground truth of this class
                curves[str(names.get(category, category))] = (recall, np.maximum(precision, 0))
        return curves

    def pr_curves_at(self, ious=(0.5, 0.75)) -> dict[float, dict]:
        """{iou: pr_curves(iou)} for those of `ious` that config.iou_thresholds has."""
        have = np.asarray(self.config.iou_thresholds)
        return {t: self.pr_curves(t) for t in ious if np.isclose(have, t).any()}

    def metric_names(self) -> list[str]:
        """The names that metrics() gives, known before any detection: stat_names, AP / AP50 /
        AP75 per class (those the IoU thresholds hold) and VOC_AP50 on VOC sources."""
        per_class = [
            f'{stat}/{name}'
            for name in self.dataset_label_map.names
            for stat, iou in PER_CLASS
            if iou is None or np.isclose(self.config.iou_thresholds, iou).any()
        ]
        voc = ['VOC_AP50'] if self.voc_ap50 else []
        field = precision_recall.metric_names(self.dataset_label_map.names)
        return [*stat_names(self.config), *per_class, *voc, *field]

    def _per_class(self, results: dict, category_ids: list[int]) -> dict[str, float]:
        names = dict(
            zip(self.dataset_label_map.category_ids, self.dataset_label_map.names, strict=True)
        )
        out = {}
        for k, category in enumerate(category_ids):
            for stat, iou in PER_CLASS:
                value = _mean_precision(results, self.config, iou=iou, category=k)
                if value is not None:
                    out[f'{stat}/{names.get(category, category)}'] = value
        return out


def coco_stats(results: dict, config: EvaluationConfig) -> dict[str, float]:
    """The summary numbers of pycocotools' accumulated `results` (COCOeval.eval), named after
    `config` (stat_names); with the default config these are COCOeval.summarize()'s 12 stats."""
    return {name: statistic(results) for name, statistic in _statistics(config)}


def stat_names(config: EvaluationConfig) -> list[str]:
    """The names of coco_stats under `config`, known before any evaluation."""
    return [name for name, _ in _statistics(config)]


def _statistics(config: EvaluationConfig) -> list:
    """(name, results -> value) of each summary number under `config`: AP; AP50 and AP75 where
    the IoU thresholds hold them; AP per area range; AR at each detection count; AR per area."""
    precision = functools.partial(_mean_precision, config=config)
    out = [('AP', precision)]
    out += [
        (f'AP{round(iou * 100)}', functools.partial(precision, iou=iou))
        for iou in (0.5, 0.75)
        if np.isclose(config.iou_thresholds, iou).any()
    ]
    letters = {'small': 's', 'medium': 'm', 'large': 'l'}
    areas = [
        (a, letters.get(name, '_' + name)) for a, (name, _, _) in enumerate(config.area_ranges)
    ][1:]
    out += [(f'AP{x}', functools.partial(precision, area=a)) for a, x in areas]
    out += [
        (f'AR{n}', functools.partial(_mean_recall, area=0, max_index=m))
        for m, n in enumerate(config.max_detections)
    ]
    out += [(f'AR{x}', functools.partial(_mean_recall, area=a, max_index=-1)) for a, x in areas]
    return out


def _mean_precision(results, config, *, iou=None, area=0, category=None) -> float | None:
    precision = results['precision']  # [T, R, K, A, M]
    if iou is not None:
        matches = np.flatnonzero(np.isclose(config.iou_thresholds, iou))
        if not len(matches):
            return None
        precision = precision[matches]
    precision = precision[:, :, :, area, -1]
    if category is not None:
        precision = precision[:, :, category]
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _mean_recall(results, *, area: int, max_index: int) -> float:
    recall = results['recall'][:, :, area, max_index]  # [T, K]
    valid = recall[recall > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _check_detections(ids, boxes, labels, scores, num_classes: int) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ValueError(
            f'evaluation: image id {int(ids[bad[0]])} has a detection with label '
            f'{int(labels[bad[0]])}, outside [0, {num_classes})'
        )
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1) | ~np.isfinite(scores))
    if len(bad):
        i = bad[0]
        raise UserError(
            f'evaluation: image id {int(ids[i])} has a detection with a non-finite '
            f'box {boxes[i].tolist()} or score {scores[i]}'
        )


def make_evaluator(
    source, split: str, detection_label_map=None, config: EvaluationConfig = EvaluationConfig()
) -> CocoEvaluator:
    """A COCO evaluator whose ground truth is the whole of `split` of `source` (a
    data.source.Source; on every process: `evaluate` gathers every process's detections before
    scoring them). `detection_label_map`: the model's, where it differs from the dataset's. VOC
    sources add VOC_AP50 in their own convention (`source.voc_ap50`)."""
    return CocoEvaluator(
        coco_ground_truth(source.ground_truth(split), source.label_map),
        source.label_map,
        detection_label_map,
        voc_ap50=source.voc_ap50,
        config=config,
    )


def _empty_results(coco_gt):
    empty = COCO()
    empty.dataset = {
        'images': coco_gt.dataset['images'],
        'categories': coco_gt.dataset['categories'],
        'annotations': [],
    }
    empty.createIndex()
    return empty


def coco_ground_truth(records, label_map: LabelMap) -> dict:
    """A COCO json dict from ground-truth records (data.source.Source.ground_truth: dicts with
    'image_id', 'height', 'width', 'boxes' xyxy original pixels, 'labels', 'is_crowd' and
    optionally 'area'); crowd boxes are kept with iscrowd=1. Labels must be in
    [0, num_classes) and image ids unique: ValueError naming the image otherwise."""
    images, annotations, seen = [], [], set()
    num_classes = label_map.num_classes
    for r in records:
        image_id = int(r['image_id'])
        if image_id in seen:
            raise UserError(f'ground truth: image id {image_id} appears twice')
        seen.add(image_id)
        images.append({'id': image_id, 'height': int(r['height']), 'width': int(r['width'])})
        boxes = np.asarray(r['boxes'], np.float64).reshape(-1, 4)
        labels = np.asarray(r['labels']).reshape(-1)
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if len(bad):
            raise UserError(
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


def format_table(metrics: dict[str, float]) -> str:
    """The summary stats as a two-row text table, then the per-class table if there is one;
    then the same for the EMA weights' metrics ('ema/...' keys), if any."""
    ema = {k[len('ema/') :]: v for k, v in metrics.items() if k.startswith('ema/')}
    if ema:
        raw = {k: v for k, v in metrics.items() if not k.startswith('ema/')}
        return f'{format_table(raw)}\nEMA weights:\n{format_table(ema)}'
    names = [n for n in metrics if '/' not in n]
    header = ' '.join(f'{n:>6}' for n in names)
    table = header + '\n' + ' '.join(f'{metrics[n]:6.3f}' for n in names)
    classes = [k.split('/', 1)[1] for k in metrics if k.startswith('AP/')]
    if not classes:
        return table
    width = max(5, *(len(c) for c in classes))
    stats = ('AP', 'AP50', 'AP75', 'P', 'R', 'F1')
    rows = [f'{"class":<{width}} ' + ' '.join(f'{s:>6}' for s in stats)]
    for c in classes:
        values = [metrics.get(f'{stat}/{c}', -1.0) for stat in stats]
        rows.append(f'{c:<{width}} ' + ' '.join(f'{v:6.3f}' for v in values))
    return table + '\n' + '\n'.join(rows)
