import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retinanet_jax.data import label_maps, shapes
from retinanet_jax.evaluation import precision_recall
from retinanet_jax.evaluation.coco_metrics import (
    STAT_NAMES,
    CocoEvaluator,
    EvaluationConfig,
    coco_ground_truth,
    format_table,
)

LABELS = label_maps.LabelMap(('a', 'b', 'c'), (5, 9, 11))  # non-contiguous category ids


def shapes_ground_truth(n=6):
    examples = []
    for i in range(n):
        e = shapes.generate_example(i, image_size=96)
        e.update(is_crowd=np.zeros(len(e['labels']), bool), height=96, width=96)
        examples.append(e)
    return examples, coco_ground_truth(examples, LABELS)


def detections_from(examples, d=10, jitter=0.0, rng=None):
    """Ground truth as detections, padded to d per image."""
    b = len(examples)
    out = {
        'boxes': np.zeros((b, d, 4)),
        'scores': np.zeros((b, d)),
        'labels': np.zeros((b, d), int),
        'valid': np.zeros((b, d), bool),
    }
    for i, e in enumerate(examples):
        n = len(e['labels'])
        noise = 0 if rng is None else rng.normal(0, jitter, (n, 4))
        out['boxes'][i, :n] = e['boxes'] + noise
        out['scores'][i, :n] = np.linspace(0.9, 0.5, n)
        out['labels'][i, :n] = e['labels']
        out['valid'][i, :n] = True
    batch = {'image_id': np.array([e['image_id'] for e in examples]), 'valid': np.ones(b, bool)}
    return out, batch


def test_perfect_predictions_score_one():
    examples, gt = shapes_ground_truth()
    evaluator = CocoEvaluator(gt, LABELS)
    evaluator.add_batch(*detections_from(examples))
    metrics = evaluator.metrics()
    per_class = {f'{stat}/{n}' for stat in ('AP', 'AP50', 'AP75') for n in LABELS.names}
    field = set(precision_recall.metric_names(LABELS.names))  # P, R, F1 (test_precision_recall)
    assert set(metrics) == set(STAT_NAMES) | per_class | field
    assert metrics['AP'] == pytest.approx(1.0) and metrics['AP50'] == pytest.approx(1.0)
    assert metrics['P'] == metrics['R'] == metrics['F1'] == metrics['best_F1'] == 1.0
    assert metrics['AR100'] == pytest.approx(1.0)
    assert 'AP50' in format_table(metrics)


def test_hand_built_case_equals_direct_pycocotools():
    examples, gt = shapes_ground_truth()
    rng = np.random.default_rng(0)
    detections, batch = detections_from(examples, jitter=3.0, rng=rng)
    detections['labels'][0, 0] = (detections['labels'][0, 0] + 1) % 3  # one wrong class
    detections['valid'][1, 0] = False  # one missed object
    evaluator = CocoEvaluator(gt, LABELS)
    evaluator.add_batch(detections, batch)
    ours = evaluator.metrics()
    # The same detections as a COCO results list, through pycocotools directly.
    results = []
    for i, e in enumerate(examples):
        for box, score, label, ok in zip(
            detections['boxes'][i],
            detections['scores'][i],
            detections['labels'][i],
            detections['valid'][i],
            strict=True,
        ):
            if ok:
                x1, y1, x2, y2 = box
                results.append(
                    {
                        'image_id': int(e['image_id']),
                        'category_id': LABELS.category_ids[label],
                        'bbox': [x1, y1, x2 - x1, y2 - y1],
                        'score': float(score),
                    }
                )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        direct = COCOeval(coco, coco.loadRes(results), 'bbox')
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    np.testing.assert_allclose([ours[n] for n in STAT_NAMES], direct.stats, rtol=1e-12)
    assert 0.2 < ours['AP'] < 0.95
    # Per class: pycocotools' precision array [T, R, K, area, max dets], as detectron2 reads it.
    precision = direct.eval['precision']
    for k, name in enumerate(LABELS.names):  # catIds sorted: the label map's order here
        for stat, t in (('AP', slice(None)), ('AP50', [0]), ('AP75', [5])):
            p = precision[t, :, k, 0, -1]
            assert ours[f'{stat}/{name}'] == pytest.approx(float(np.mean(p[p > -1])), abs=1e-12)
    assert len({round(ours[f'AP/{n}'], 6) for n in LABELS.names}) > 1  # classes differ


def test_settable_parameters_and_the_report():
    examples, gt = shapes_ground_truth()
    detections, batch = detections_from(examples, jitter=4.0, rng=np.random.default_rng(3))
    default = CocoEvaluator(gt, LABELS)
    default.add_batch(detections, batch)
    metrics = default.metrics()
    config = EvaluationConfig(
        iou_thresholds=(0.5,),
        max_detections=(1, 5, 20),
        area_ranges=(('all', 0, 1e10), ('tiny', 0, 20.0**2)),
    )
    custom = CocoEvaluator(gt, LABELS, config=config)
    custom.add_batch(detections, batch)
    at50 = custom.metrics()
    assert at50['AP'] == at50['AP50'] == pytest.approx(metrics['AP50'])
    assert 'AP75' not in at50 and {'AR1', 'AR5', 'AR20', 'AP_tiny', 'AR_tiny'} <= set(at50)
    # The names are known before any evaluation (config.keep_best is checked against them).
    assert default.metric_names() == list(metrics) and custom.metric_names() == list(at50)
    name = LABELS.names[0]
    assert f'AP75/{name}' in metrics and f'AP75/{name}' not in at50 and f'AP50/{name}' in at50
    table = format_table(metrics)
    assert table.splitlines()[0].split()[:3] == ['AP', 'AP50', 'AP75']
    assert 'class' in table and all(n in table for n in LABELS.names)
    with pytest.raises(ValueError, match='iou_thresholds must be in'):
        EvaluationConfig(iou_thresholds=(0.5, 1.5))


@pytest.mark.parametrize(
    'change, message',
    [
        (lambda d: d['labels'].__setitem__((0, 0), -1), 'image id 0 .* label -1, outside'),
        (lambda d: d['labels'].__setitem__((1, 0), 3), r'image id 1 .* label 3, outside \[0, 3\)'),
        (lambda d: d['boxes'].__setitem__((0, 0, 2), np.nan), 'image id 0 .* non-finite box'),
        (lambda d: d['scores'].__setitem__((1, 0), np.inf), 'image id 1 .* non-finite .* inf'),
    ],
)
def test_bad_detections_are_refused_by_name(change, message):
    examples, gt = shapes_ground_truth(2)
    detections, batch = detections_from(examples)
    change(detections)
    with pytest.raises(ValueError, match=message):
        CocoEvaluator(gt, LABELS).add_batch(detections, batch)
    detections['valid'][:] = False  # the same values in empty slots are fine
    CocoEvaluator(gt, LABELS).add_batch(detections, batch)


def test_ground_truth_labels_outside_the_classes_are_refused():
    examples, _ = shapes_ground_truth(2)
    examples[1]['labels'] = examples[1]['labels'].copy()
    examples[1]['labels'][0] = 3
    with pytest.raises(ValueError, match=r'ground truth of image id 1: label 3 outside \[0, 3\)'):
        coco_ground_truth(examples, LABELS)


def test_padding_examples_change_nothing_and_empty_images_count():
    examples, gt = shapes_ground_truth()
    detections, batch = detections_from(examples)
    reference = CocoEvaluator(gt, LABELS)
    reference.add_batch(detections, batch)
    expected = reference.metrics()
    padded = {k: np.concatenate([v, v[:2]]) for k, v in detections.items()}
    padded_batch = {
        'image_id': np.concatenate([batch['image_id'], [-1, -1]]),
        'valid': np.concatenate([batch['valid'], [False, False]]),
    }
    evaluator = CocoEvaluator(gt, LABELS)
    evaluator.add_batch(padded, padded_batch)
    assert evaluator.metrics() == expected
    # An image seen without any detection still counts (its objects are misses).
    detections['valid'][0] = False
    evaluator.reset()
    evaluator.add_batch(detections, batch)
    assert evaluator.metrics()['AR100'] < expected['AR100']


def test_unknown_image_ids_are_named():
    examples, gt = shapes_ground_truth(2)
    detections, batch = detections_from(examples)
    batch['image_id'] = batch['image_id'] + 12345
    evaluator = CocoEvaluator(gt, LABELS)
    with pytest.raises(ValueError, match=r'image id 12345 is not in the ground truth'):
        evaluator.add_batch(detections, batch)


def voc_case():
    """One category; image 1 has two objects, image 2 one 'difficult' object (iscrowd)."""
    gt = {
        'images': [{'id': 1, 'height': 100, 'width': 100}, {'id': 2, 'height': 100, 'width': 100}],
        'categories': [{'id': 5, 'name': 'a'}, {'id': 9, 'name': 'b'}],
        'annotations': [
            {'id': 1, 'image_id': 1, 'category_id': 5, 'bbox': [0, 0, 10, 10], 'iscrowd': 0},
            {'id': 2, 'image_id': 1, 'category_id': 5, 'bbox': [20, 20, 10, 10], 'iscrowd': 0},
            {'id': 3, 'image_id': 2, 'category_id': 5, 'bbox': [0, 0, 10, 10], 'iscrowd': 1},
        ],
    }
    rows = np.array(
        [  # image, x, y, w, h, score, category
            [1, 0, 0, 10, 10, 0.9, 5],  # found
            [2, 0, 0, 10, 10, 0.8, 5],  # the difficult object: neither found nor missed
            [1, 50, 50, 10, 10, 0.7, 5],  # false positive
            [1, 21, 20, 10, 10, 0.6, 5],  # found (IoU 0.82)
            [1, 1, 0, 10, 10, 0.5, 5],  # a second detection of a found object: false positive
            [2, 0, 0, 10, 10, 0.4, 9],  # category 9 has no ground truth: not averaged
        ]
    )
    return gt, rows


def test_voc_ap50_golden():
    """By hand: recall 0.5, 0.5, 1, 1 at precision 1, 1/2, 2/3, 1/2.
    11-point: 6 x 1 (recall >= 0 .. 0.5) + 5 x 2/3, over 11. Area: 0.5 x 1 + 0.5 x 2/3."""
    from retinanet_jax.evaluation.voc_metric import voc_ap50

    gt, rows = voc_case()
    np.testing.assert_allclose(voc_ap50(rows, gt, [1, 2], True), (6 + 5 * 2 / 3) / 11)
    np.testing.assert_allclose(voc_ap50(rows, gt, [1, 2], False), 0.5 + 0.5 * 2 / 3)
    # Only image 1 evaluated: the difficult object's image is out, nothing else changes.
    np.testing.assert_allclose(voc_ap50(rows, gt, [1], True), (6 + 5 * 2 / 3) / 11)
    assert voc_ap50(rows[:0], gt, [1, 2], True) == 0.0


def test_voc_ap50_through_the_evaluator():
    examples, gt = shapes_ground_truth()
    evaluator = CocoEvaluator(gt, LABELS, voc_ap50='11_point')
    evaluator.add_batch(*detections_from(examples))
    metrics = evaluator.metrics()
    assert metrics['VOC_AP50'] == pytest.approx(1.0) and 'VOC_AP50' in format_table(metrics)
    assert evaluator.metric_names() == list(metrics)
    with pytest.raises(ValueError, match="voc_ap50 must be None, '11_point' or 'area'"):
        CocoEvaluator(gt, LABELS, voc_ap50='07')


def test_pr_curves_of_the_evaluated_thresholds_only():
    from retinanet_jax.evaluation.pictures import pr_curve_picture

    examples, gt = shapes_ground_truth()
    evaluator = CocoEvaluator(gt, LABELS, config=EvaluationConfig(iou_thresholds=(0.5, 0.6)))
    evaluator.add_batch(*detections_from(examples))
    evaluator.metrics()
    curves = evaluator.pr_curves_at((0.5, 0.75))
    assert list(curves) == [0.5] and set(curves[0.5]) <= set(LABELS.names)
    recall, precision = next(iter(curves[0.5].values()))
    assert recall.shape == precision.shape == (101,) and precision.min() == 1.0
    assert pr_curve_picture(curves).shape[2] == 3
    assert pr_curve_picture({}).shape[2] == 3  # neither threshold: a picture saying so
