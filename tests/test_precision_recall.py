"""Precision, recall and F1 at an IoU and a score threshold, and the best-F1 threshold
(evaluation/precision_recall.py): a hand-counted golden case, a brute-force sweep, pycocotools'
matching, and COCO's AP with more than 100 detections per image where the config asks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retinanet_jax.data import label_maps
from retinanet_jax.evaluation.coco_metrics import CocoEvaluator, EvaluationConfig
from retinanet_jax.evaluation.precision_recall import field_metrics, match

LABELS = label_maps.LabelMap(('a', 'b'), (1, 2))


def annotation(k, image, category, bbox, crowd=0):
    return {'id': k, 'image_id': image, 'category_id': category, 'bbox': bbox, 'iscrowd': crowd}


GOLDEN = {
    'images': [{'id': 1, 'height': 200, 'width': 200}, {'id': 2, 'height': 200, 'width': 200}],
    'categories': [{'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}],
    'annotations': [
        annotation(1, 1, 1, [0, 0, 10, 10]),
        annotation(2, 1, 1, [20, 20, 10, 10]),
        annotation(3, 1, 2, [50, 50, 10, 10]),
        annotation(4, 1, 2, [70, 70, 20, 20], crowd=1),  # a crowd region: neither hit nor miss
        annotation(5, 2, 1, [0, 0, 20, 20]),  # never found
    ],
}
ROWS = np.array(  # image, x, y, w, h, score, category
    [
        [1, 0, 0, 10, 10, 0.9, 1],  # a hit
        [1, 1, 1, 10, 10, 0.8, 1],  # a duplicate of the same object: a false positive
        [1, 20, 20, 10, 10, 0.2, 1],  # a hit, below the score threshold 0.3
        [1, 50, 50, 10, 10, 0.7, 2],  # a hit
        [1, 75, 75, 5, 5, 0.6, 2],  # inside the crowd region: not counted
        [1, 100, 100, 5, 5, 0.5, 2],  # a false positive
    ]
)


def test_golden_counts_by_hand():
    m = field_metrics(GOLDEN, ROWS, [1, 2], LABELS, iou=0.5, score=0.3)
    # class a: 1 hit of 2 kept detections, 3 objects; class b: 1 of 2 (the crowd one not
    # counted), 1 object (the crowd region not counted); all: 2 of 4, 4 objects
    assert (m['P/a'], m['R/a'], m['F1/a']) == pytest.approx((0.5, 1 / 3, 0.4))
    assert (m['P/b'], m['R/b'], m['F1/b']) == pytest.approx((0.5, 1.0, 2 / 3))
    assert (m['P'], m['R'], m['F1']) == pytest.approx((0.5, 0.5, 0.5))
    # thresholds 0.9 .. 0.2: F1 0.4, 1/3, 4/7, 4/7, 0.5, then all kept: P 3/5, R 3/4 -> 2/3
    assert m['best_F1'] == pytest.approx(2 / 3) and m['best_F1_score'] == pytest.approx(0.2)
    strict = field_metrics(GOLDEN, ROWS, [1, 2], LABELS, iou=0.7, score=0.3)
    assert strict['P/a'] == 0.5  # the duplicate's IoU 0.68 matters only with the object free
    empty = field_metrics(GOLDEN, np.zeros((0, 7)), [1, 2], LABELS)
    assert (empty['P'], empty['R'], empty['F1'], empty['best_F1']) == (0.0, 0.0, 0.0, 0.0)


def scene(rng, images=3):
    truth, rows, k = [], [], 1  # annotation ids from 1: pycocotools marks a match by its id
    for image in range(images):
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 80, 2)
            w, h = rng.uniform(5, 30, 2)
            category = int(rng.integers(1, 3))
            truth.append(
                annotation(k, image, category, [x, y, w, h], crowd=int(rng.random() < 0.1))
            )
            k += 1
            for _ in range(rng.integers(0, 3)):  # detections near it, some off
                jitter = rng.normal(0, 4, 4)
                rows.append(
                    [
                        image,
                        x + jitter[0],
                        y + jitter[1],
                        w + abs(jitter[2]),
                        h + abs(jitter[3]),
                        rng.random(),
                        category,
                    ]
                )
        for _ in range(rng.integers(0, 3)):  # background detections
            rows.append(
                [
                    image,
                    *rng.uniform(0, 80, 2),
                    *rng.uniform(5, 20, 2),
                    rng.random(),
                    int(rng.integers(1, 3)),
                ]
            )
    ground_truth = {'images': [{'id': i} for i in range(images)], 'annotations': truth}
    return ground_truth, np.asarray(rows, np.float64).reshape(-1, 7)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_best_f1_threshold_is_a_brute_force_sweeps(seed):
    truth, rows = scene(np.random.default_rng(seed))
    m = field_metrics(truth, rows, range(3), LABELS)
    candidates = sorted(set(rows[:, 5]), reverse=True)
    if not candidates or not any(not a['iscrowd'] for a in truth['annotations']):
        assert m['best_F1'] == 0.0
        return
    sweep = [
        field_metrics(truth, rows[rows[:, 5] >= s], range(3), LABELS, score=0)['F1']
        for s in candidates
    ]
    assert m['best_F1'] == pytest.approx(max(sweep))
    assert m['best_F1_score'] == candidates[int(np.argmax(sweep))]  # the highest of a tie


def test_matching_agrees_with_pycocotools():
    """Hits at IoU 0.5 equal pycocotools' dtMatches (all areas, every detection kept)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth, rows = scene(np.random.default_rng(7), images=6)
    for a in truth['annotations']:
        a['area'] = a['bbox'][2] * a['bbox'][3]
    truth['categories'] = [{'id': 1}, {'id': 2}]
    gt = COCO()
    gt.dataset = truth
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        e = COCOeval(gt, gt.loadRes(rows), 'bbox')
        e.params.iouThrs, e.params.maxDets = np.array([0.5]), [1000]
        e.evaluate()
    matched = {
        int(d)
        for r in e.evalImgs
        if r and r['aRng'] == [0, 1e10]
        for d, m in zip(r['dtIds'], r['dtMatches'][0], strict=True)
        if m > 0
    }
    hits, counted, *_ = match(truth, rows, range(6), 0.5)
    ignored = {
        int(d)
        for r in e.evalImgs
        if r and r['aRng'] == [0, 1e10]
        for d, i in zip(r['dtIds'], r['dtIgnore'][0], strict=True)
        if i
    }
    ours = {k + 1 for k in np.flatnonzero(hits)}  # loadRes numbers detections from 1, in order
    assert ours == matched - ignored and {k + 1 for k in np.flatnonzero(~counted)} == ignored


def test_coco_ap_counts_more_than_100_detections_where_the_config_asks():
    """One dense image of 150 objects found exactly: COCO's default cap of 100 detections
    hides a third of them; max_detections (1, 10, 300) scores them all."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 900, (150, 2))
    boxes = np.concatenate([xy, xy + 20], axis=1)
    example = {
        'image_id': 0,
        'height': 1000,
        'width': 1000,
        'boxes': boxes,
        'labels': np.zeros(150, int),
        'is_crowd': np.zeros(150, bool),
    }
    from retinanet_jax.evaluation.coco_metrics import coco_ground_truth

    gt = coco_ground_truth([example], LABELS)
    detections = {
        'boxes': boxes[None],
        'scores': np.linspace(0.9, 0.5, 150)[None],
        'labels': np.zeros((1, 150), int),
        'valid': np.ones((1, 150), bool),
    }
    batch = {'image_id': np.array([0]), 'valid': np.ones(1, bool)}
    results = {}
    for cap in (100, 300):
        evaluator = CocoEvaluator(gt, LABELS, config=EvaluationConfig(max_detections=(1, 10, cap)))
        evaluator.add_batch(detections, batch)
        results[cap] = evaluator.metrics()
    assert results[300]['AP'] == pytest.approx(1.0) and results[300]['AR300'] == pytest.approx(1.0)
    assert results[100]['AP'] < 0.7 and results[100]['AR100'] == pytest.approx(100 / 150)
    assert results[300]['R'] == pytest.approx(1.0) and results[300]['P'] == pytest.approx(1.0)
