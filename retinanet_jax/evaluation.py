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
    def __init__(self, ground_truth: dict, label_map: LabelMap):
        from pycocotools.coco import COCO

        self.label_map = label_map
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
        return dict(zip(STAT_NAMES, (float(v) for v in evaluator.stats), strict=True))


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


def coco_ground_truth(raw_examples, label_map: LabelMap) -> dict:
    """A COCO json dict from raw source examples (numpy dicts with 'image', 'image_id', 'boxes'
    xyxy original pixels, 'labels', 'is_crowd'); crowd boxes are kept with iscrowd=1."""
    images, annotations = [], []
    for example in raw_examples:
        image_id = int(example['image_id'])
        h, w = np.asarray(example['image']).shape[:2]
        images.append({'id': image_id, 'height': int(h), 'width': int(w)})
        for box, label, crowd in zip(
            example['boxes'], example['labels'], example['is_crowd'], strict=True
        ):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    'id': len(annotations) + 1,
                    'image_id': image_id,
                    'category_id': int(label_map.category_ids[int(label)]),
                    'bbox': [x1, y1, x2 - x1, y2 - y1],
                    'area': (x2 - x1) * (y2 - y1),
                    'iscrowd': int(bool(crowd)),
                }
            )
    categories = [
        {'id': int(c), 'name': n}
        for n, c in zip(label_map.names, label_map.category_ids, strict=True)
    ]
    return {'images': images, 'annotations': annotations, 'categories': categories}


def format_table(metrics: dict[str, float]) -> str:
    """The stats as a two-row text table."""
    names = [n for n in STAT_NAMES if n in metrics]
    header = ' '.join(f'{n:>6}' for n in names)
    return header + '\n' + ' '.join(f'{metrics[n]:6.3f}' for n in names)
