"""Why a model misses, as files: the analysis of a model on a dataset split, what
`python -m retinanet_jax analyze` writes.

analyze_run(model, split, out=DIR, score_threshold=0.3, iou=0.5, worst=16, ...) -> summary,
writing into DIR:
  metrics.json           `evaluate`'s metrics of the same detections (coco_metrics)
  confusion_matrix.json  {'classes', 'rows', 'columns', 'matrix' [K + 1][K + 1], 'iou',
      .png               'score_threshold', 'objects'}: rows = ground-truth class + a last row
                         of false positives, columns = predicted class + a last column of
                         missed objects (error_analysis.confusion_matrix: one cell per object)
  pr_curves.png          precision / recall per class at IoU 0.5 and 0.75 (pycocotools')
  errors.json / .png     TIDE's error breakdown at IoU 0.5, per class and over all classes:
                         the AP50 gained by fixing each error type (error_analysis.tide_errors)
  worst/                 the `worst` images with the most errors (confusion-matrix errors at the
                         score threshold), ground truth left, detections right:
                         NN_image<id>_<errors>errors.png, and index.json

The model and split are those of `evaluate` (split_evaluation.prepare): a training run on its own
evaluation split by default. Classes are the dataset's; detections of categories the dataset
lacks are left out, as pycocotools leaves them out.
"""

import json
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from retinanet_jax.errors import UserError
from retinanet_jax.evaluation import pictures as eval_pictures
from retinanet_jax.evaluation import split_evaluation
from retinanet_jax.evaluation.error_analysis import ERROR_TYPES, confusion_matrix, tide_errors


def analyze_run(
    model: str | Path,
    split: str | None = None,
    *,
    out: str | Path,
    score_threshold: float = 0.3,
    iou: float = 0.5,
    worst: int = 16,
    tiles=split_evaluation.RUN_TILES,
    **options,
) -> dict:
    """Evaluates `model` on a split (split_evaluation.prepare's options) and writes the analysis
    files into `out` (module docstring); returns {'metrics', 'confusion_matrix', 'errors'}."""
    if not 0 < iou < 1:
        raise UserError(f'iou must be in (0, 1), got {iou}')
    if not 0 <= score_threshold <= 1:
        raise UserError(f'score_threshold must be in [0, 1], got {score_threshold}')
    if worst < 0:
        raise UserError(f'worst must be >= 0, got {worst}')
    options |= dict(pr_iou=iou, pr_score_threshold=score_threshold)  # P / R / F1 alike
    e = split_evaluation.prepare(model, split, **options)
    metrics = e.run(tiles)
    rows, image_ids = e.evaluator.detections()
    if jax.process_index() != 0:
        return {'metrics': metrics}
    out = Path(out)
    (out / 'worst').mkdir(parents=True, exist_ok=True)
    label_map = e.source.label_map
    names, category_ids = list(label_map.names), list(label_map.category_ids)
    rows = rows[np.isin(rows[:, 6], category_ids)]
    coco_gt = e.evaluator.coco_gt
    _write_json(out / 'metrics.json', {'model': str(model), 'split': e.split, **metrics})
    matrix, per_image = confusion_matrix(
        coco_gt, rows, image_ids, category_ids, iou=iou, score_threshold=score_threshold
    )
    confusion = {
        'classes': names,
        'rows': [*names, 'false positive'],
        'columns': [*names, 'missed'],
        'matrix': matrix.tolist(),
        'iou': iou,
        'score_threshold': score_threshold,
        'objects': int(matrix[:-1].sum()),
    }
    _write_json(out / 'confusion_matrix.json', confusion)
    title = f'IoU {iou:g}, score >= {score_threshold:g}'
    _write_png(
        out / 'confusion_matrix.png', eval_pictures.confusion_matrix_picture(matrix, names, title)
    )
    curves = e.evaluator.pr_curves_at((0.5, 0.75))
    _write_png(out / 'pr_curves.png', eval_pictures.pr_curve_picture(curves))
    max_detections = e.evaluator.config.max_detections[-1]
    tide = tide_errors(coco_gt, rows, image_ids, category_ids, max_detections=max_detections)
    errors = _errors_by_name(tide, dict(zip(category_ids, names, strict=True)))
    _write_json(out / 'errors.json', errors)
    by_class = {t: {**errors['dAP'][t], 'all': errors['mAP_dAP'][t]} for t in ERROR_TYPES}
    _write_png(out / 'errors.png', eval_pictures.errors_picture(by_class, 'TIDE, IoU 0.5'))
    drawn = _draw_worst(e, rows, per_image, worst, score_threshold, out / 'worst')
    _write_json(out / 'worst' / 'index.json', drawn)
    print(
        f'{e.predictor.description} on {e.dataset} {e.split}: AP {metrics["AP"]:.3f}, '
        f'AP50 {metrics.get("AP50", -1):.3f}; wrote {out}'
    )
    print(format_errors(errors))
    return {'metrics': metrics, 'confusion_matrix': confusion, 'errors': errors}


def _errors_by_name(tide: dict, names: dict) -> dict:
    """tide_errors' result keyed by class name, with its definition."""
    return {
        'definition': 'TIDE (Bolya et al. 2020) error types and oracle fixes at IoU 0.5 '
        '(background IoU 0.1), AP and matching of pycocotools: dAP = AP50 with every error '
        'of the type fixed - AP50 (retinanet_jax/evaluation/error_analysis.py)',
        'AP50': {names[c]: v for c, v in tide['AP50'].items()},
        'dAP': {t: {names[c]: v for c, v in tide['dAP'][t].items()} for t in ERROR_TYPES},
        'mAP_dAP': tide['mAP_dAP'],
        'counts': {t: {names[c]: v for c, v in tide['counts'][t].items()} for t in ERROR_TYPES},
    }


def format_errors(errors: dict) -> str:
    """errors.json as a text table: dAP per class and error type, and over all classes."""
    classes = [c for c, ap in errors['AP50'].items() if ap >= 0]  # -1: no object of it
    width = max(5, *(len(c) for c in classes)) if classes else 5
    lines = [f'{"class":<{width}}   AP50 ' + ' '.join(f'{t:>6}' for t in ERROR_TYPES)]
    for c in classes:
        d_ap = ' '.join(f'{errors["dAP"][t].get(c, 0.0):6.3f}' for t in ERROR_TYPES)
        lines.append(f'{c:<{width}} {errors["AP50"][c]:6.3f} {d_ap}')
    d_ap = ' '.join(f'{errors["mAP_dAP"][t]:6.3f}' for t in ERROR_TYPES)
    lines.append(f'{"all":<{width}} {"":6} {d_ap}')
    return 'TIDE dAP (AP50 gained by fixing each error type):\n' + '\n'.join(lines)


def _draw_worst(e, rows, per_image: dict, count: int, score_threshold: float, folder: Path):
    """Draws the `count` images with the most errors (ties: the lower image id first)."""
    ranked = sorted((-n, i) for i, n in per_image.items() if n > 0)[:count]
    if not ranked:
        return []
    # the evaluator's ground truth lists the images in record order (coco_ground_truth)
    images = e.evaluator.coco_gt.dataset['images']
    index = {int(image['id']): k for k, image in enumerate(images)}
    label_map = e.source.label_map
    label_of = {int(c): k for k, c in enumerate(label_map.category_ids)}
    drawn = []
    for rank, (minus_errors, image_id) in enumerate(ranked, start=1):
        example = e.source.example(e.split, index[image_id])
        dets = rows[rows[:, 0] == image_id]
        boxes = np.concatenate([dets[:, 1:3], dets[:, 1:3] + dets[:, 3:5]], axis=1)
        labels = np.asarray([label_of[int(c)] for c in dets[:, 6]], np.int64)
        picture = eval_pictures.side_by_side(
            example['image'],
            (example['boxes'], example['labels']),
            (boxes, dets[:, 5], labels),
            label_map.names,
            score_threshold,
        )
        name = f'{rank:02d}_image{image_id}_{-minus_errors}errors.png'
        _write_png(folder / name, picture)
        drawn.append({'file': name, 'image_id': image_id, 'errors': -minus_errors})
    return drawn


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1))


def _write_png(path: Path, picture: np.ndarray) -> None:
    Image.fromarray(np.asarray(picture, np.uint8)).save(path)
