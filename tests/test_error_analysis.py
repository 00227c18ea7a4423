"""error_analysis: the confusion matrix on a hand-made scene (golden), its rows summing to the
objects on random scenes, and the TIDE breakdown against a port of TIDE itself
(retinanet_jax/testing/tide.py) and its AP50 against pycocotools'."""

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO

from retinanet_jax.data import label_maps
from retinanet_jax.evaluation.coco_metrics import CocoEvaluator, coco_ground_truth
from retinanet_jax.evaluation.error_analysis import (
    ERROR_TYPES,
    average_precision,
    confusion_matrix,
    tide_errors,
)
from retinanet_jax.testing.tide import tide

LABELS = label_maps.LabelMap(('a', 'b', 'c'), (5, 9, 11))  # non-contiguous category ids
A, B, C = LABELS.category_ids


def coco(records) -> COCO:
    gt = COCO()
    gt.dataset = coco_ground_truth(records, LABELS)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def record(image_id, boxes, labels, crowd=None, size=200):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    crowd = np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd, bool)
    return {
        'image_id': image_id,
        'height': size,
        'width': size,
        'boxes': boxes,
        'labels': np.asarray(labels, np.int32),
        'is_crowd': crowd,
    }


def row(image_id, xyxy, score, category):
    x1, y1, x2, y2 = xyxy
    return [image_id, x1, y1, x2 - x1, y2 - y1, score, category]


def test_confusion_matrix_golden_scene():
    # image 1: a (found), b (found as c), c (found twice), a (missed); a crowd region
    # image 2: b (found, and a background false positive); image 3: nothing, one detection
    records = [
        record(
            1,
            [
                [0, 0, 40, 40],
                [50, 0, 90, 40],
                [100, 0, 140, 40],
                [0, 100, 40, 140],
                [150, 150, 199, 199],
            ],
            [0, 1, 2, 0, 1],
            crowd=[0, 0, 0, 0, 1],
        ),
        record(2, [[10, 10, 60, 60]], [1]),
        record(3, [], []),
    ]
    dets = [
        row(1, [1, 1, 41, 41], 0.9, A),  # a -> a
        row(1, [50, 0, 90, 42], 0.8, C),  # b -> c: a class confusion
        row(1, [100, 0, 140, 40], 0.7, C),  # c -> c
        row(1, [101, 1, 141, 41], 0.6, C),  # c again: a duplicate, a false positive
        row(1, [155, 155, 195, 195], 0.5, B),  # inside the crowd region: ignored
        row(1, [0, 100, 40, 140], 0.2, A),  # under the score threshold: a is missed
        row(2, [10, 10, 60, 60], 0.95, B),  # b -> b
        row(2, [120, 120, 160, 160], 0.4, A),  # background
        row(3, [0, 0, 30, 30], 0.35, B),  # background
    ]
    matrix, errors = confusion_matrix(
        coco(records), np.asarray(dets), [1, 2, 3], LABELS.category_ids, score_threshold=0.3
    )
    want = [
        [1, 0, 0, 1],  # a: found once, missed once
        [0, 1, 1, 0],  # b: found once, once as c
        [0, 0, 1, 0],  # c
        [1, 1, 1, 0],  # false positives: a (image 2), b (image 3), c (the duplicate)
    ]
    np.testing.assert_array_equal(matrix, want)
    assert matrix[:3].sum() == 5  # the non-crowd objects
    assert errors == {1: 3, 2: 1, 3: 1}


def test_confusion_matrix_of_nothing():
    matrix, errors = confusion_matrix(
        coco([record(1, [], [])]), np.zeros((0, 7)), [1], LABELS.category_ids
    )
    assert matrix.shape == (4, 4) and matrix.sum() == 0 and errors == {1: 0}


def random_scene(seed: int, images: int = 4):
    """Objects of every class and detections of each kind of error: good, poorly placed, the
    wrong class, duplicates, background boxes, missed objects; distinct scores."""
    rng = np.random.default_rng(seed)
    records, dets = [], []
    for image in range(1, images + 1):
        n = rng.integers(3 if image == 1 else 0, 7)
        labels = np.arange(n) % 3 if image == 1 else rng.integers(0, 3, n)
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(20, 90, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        records.append(record(image, boxes, labels, size=400))
        for box, label in zip(boxes, labels, strict=True):
            for _ in range(rng.integers(0, 3)):  # 0: missed, 2: a duplicate or worse
                kind = rng.choice(['good', 'loose', 'class', 'both'], p=[0.55, 0.2, 0.15, 0.1])
                size = box[2:] - box[:2]
                shift = {'good': 0.05, 'loose': 0.5, 'class': 0.05, 'both': 0.5}[kind]
                moved = box + np.tile(rng.uniform(-shift, shift, 2) * size, 2)
                wrong = (label + rng.integers(1, 3)) % 3 if kind in ('class', 'both') else label
                dets.append(row(image, moved, 0, LABELS.category_ids[wrong]))
        for _ in range(rng.integers(0, 3)):  # background
            xy = rng.uniform(0, 350, 2)
            label = rng.integers(0, 3)
            dets.append(row(image, [*xy, *(xy + 30)], 0, LABELS.category_ids[label]))
    dets = np.asarray(dets, np.float64).reshape(-1, 7)
    dets[:, 5] = rng.permutation(len(dets)) / max(len(dets), 1) + 0.001  # distinct scores
    return records, dets


def tide_inputs(records, dets):
    gt = [
        {
            'image': r['image_id'],
            'class': int(LABELS.category_ids[k]),
            'bbox': [*b[:2], *(b[2:] - b[:2])],
        }
        for r in records
        for b, k in zip(np.asarray(r['boxes'], np.float64), r['labels'], strict=True)
    ]
    preds = [
        {'image': int(d[0]), 'class': int(d[6]), 'bbox': list(d[1:5]), 'score': float(d[5])}
        for d in dets
    ]
    return gt, preds


def coco_evaluation(gt: COCO, dets: np.ndarray, ids) -> dict:
    """CocoEvaluator's metrics of detection rows, fed as a batch of padded images."""
    width = max(1, *(int(np.sum(dets[:, 0] == i)) for i in ids))
    batch = {k: [] for k in ('boxes', 'scores', 'labels', 'valid')}
    for i in ids:
        d = dets[dets[:, 0] == i]
        pad = width - len(d)
        batch['boxes'].append(np.pad(np.c_[d[:, 1:3], d[:, 1:3] + d[:, 3:5]], ((0, pad), (0, 0))))
        batch['scores'].append(np.pad(d[:, 5], (0, pad)))
        batch['labels'].append(np.pad(np.searchsorted(LABELS.category_ids, d[:, 6]), (0, pad)))
        batch['valid'].append(np.arange(width) < len(d))
    evaluator = CocoEvaluator(gt.dataset, LABELS)
    evaluator.add_batch(
        {k: np.stack(v) for k, v in batch.items()},
        {'image_id': np.asarray(ids), 'valid': np.ones(len(ids), bool)},
    )
    return evaluator.metrics()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_tide_errors_match_tide_itself_and_ap50_matches_pycocotools(seed):
    records, dets = random_scene(seed)
    gt = coco(records)
    ids = [r['image_id'] for r in records]
    ours = tide_errors(gt, dets, ids, LABELS.category_ids)
    # TIDE's own AP differs from pycocotools' only in its recall thresholds' last bits
    tide_own = tide(*tide_inputs(records, dets))
    reference = tide(*tide_inputs(records, dets), recall_thresholds=np.linspace(0, 1, 101))

    metrics = coco_evaluation(gt, dets, ids)
    dropped = False
    for k, c in enumerate(LABELS.category_ids):
        name = LABELS.names[k]
        assert ours['AP50'][c] == pytest.approx(metrics[f'AP50/{name}'], abs=1e-12)
        assert ours['AP50'][c] == pytest.approx(reference['ap'][c], abs=1e-12)
        assert ours['AP50'][c] == pytest.approx(tide_own['ap'][c], abs=0.02)
        for error in ERROR_TYPES:
            if c not in reference['fixed'][error]:
                # every object of the class missed, no detection of it: TIDE drops the class
                # once misses are fixed, we count it found (module docstring of error_analysis)
                assert error == 'miss' and ours['dAP'][error][c] == 1.0
                dropped = True
                continue
            want = max(reference['fixed'][error][c] - reference['ap'][c], 0.0)
            assert ours['dAP'][error][c] == pytest.approx(want, abs=1e-12), (error, name)
    for error in ERROR_TYPES:
        if not (error == 'miss' and dropped):
            assert ours['mAP_dAP'][error] == pytest.approx(reference['main'][error], abs=1e-12)
        assert sum(ours['counts'][error].values()) == reference['counts'][error], error


def test_average_precision_edges():
    thresholds = np.linspace(0, 1, 101)
    assert average_precision([], [], 0, thresholds) == -1.0  # no objects: undefined
    assert average_precision([], [], 3, thresholds) == 0.0  # objects, no detections
    assert average_precision([0.9, 0.8], [True, True], 2, thresholds) == 1.0
    # one true among two, found second: precision 1/2 up to recall 1
    assert average_precision([0.9, 0.8], [False, True], 1, thresholds) == pytest.approx(0.5)


def test_tide_errors_of_no_detections_are_all_missed():
    records = [record(1, [[0, 0, 40, 40], [50, 50, 90, 90]], [0, 2])]
    out = tide_errors(coco(records), np.zeros((0, 7)), [1], LABELS.category_ids)
    assert out['AP50'] == {A: 0.0, B: -1.0, C: 0.0}
    assert out['counts']['miss'] == {A: 1, B: 0, C: 1}
    # fixing the misses leaves nothing to find: those classes become perfect
    assert out['dAP']['miss'] == {A: 1.0, C: 1.0}
    assert out['mAP_dAP']['miss'] == 1.0


def test_confusion_matrix_counts_as_coco_matches_then_confusions():
    """A wrong-class detection scoring above the right one does not take the object from it
    (COCO's per-class match comes first); a crowd region of another class hides nothing."""
    records = [record(1, [[0, 0, 40, 40], [100, 100, 180, 180]], [0, 1], crowd=[0, 1])]
    dets = [
        row(1, [0, 0, 40, 40], 0.9, C),  # c on an a: left over, a false positive
        row(1, [1, 1, 41, 41], 0.8, A),  # a on the a: found
        row(1, [110, 110, 170, 170], 0.7, A),  # a inside b's crowd region: counted
        row(1, [110, 110, 170, 170], 0.6, B),  # b inside b's crowd region: ignored
    ]
    matrix, errors = confusion_matrix(coco(records), np.asarray(dets), [1], LABELS.category_ids)
    np.testing.assert_array_equal(matrix, [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]])
    assert errors == {1: 2}
