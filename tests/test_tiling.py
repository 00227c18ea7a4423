"""Sliced inference (inference/tiling.py): windows that cover the image, detections mapped back
and merged so that one object gives one detection, and the sliced predictor equal to the
whole-image one where one window holds the image."""

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from retinanet_jax.inference import tiling
from retinanet_jax.ops.normalization import PAD_VALUE

from .helpers import LOW_SCORE


def test_windows_golden():
    windows = tiling.tile_windows((1000, 700), tile=512, overlap=0.2)  # stride 410
    ys = sorted({int(w[0]) for w in windows})
    xs = sorted({int(w[1]) for w in windows})
    assert ys == [0, 410, 488] and xs == [0, 188]
    assert (windows[:, 2] - windows[:, 0] == 512).all() and (
        windows[:, 3] - windows[:, 1] == 512
    ).all()
    # a side shorter than the tile: one window of that side
    np.testing.assert_array_equal(tiling.tile_windows((300, 200), 512, 0.2), [[0, 0, 300, 200]])
    with pytest.raises(ValueError, match='overlap must be in'):
        tiling.tile_windows((10, 10), 8, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 2000),
    st.integers(1, 2000),
    st.integers(16, 600),
    st.floats(0.0, 0.9),
)
def test_windows_cover_the_image_inside_it_and_overlap_as_asked(h, w, tile, overlap):
    windows = tiling.tile_windows((h, w), tile, overlap)
    covered = np.zeros((h, w), bool)
    for y0, x0, y1, x1 in windows:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert (y1 - y0, x1 - x0) == (min(tile, h), min(tile, w))
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    stride = max(1, round(tile * (1 - overlap)))
    for axis in (0, 1):
        starts = sorted({int(s) for s in windows[:, axis]})
        assert all(b - a <= stride for a, b in itertools.pairwise(starts)), starts


def oracle_parts(gt_boxes, gt_labels, windows, score=0.9):
    """What a perfect detector sees in each window: every object that shows in it, clipped to
    the window (a cut object gives its visible part), in the window's pixels."""
    parts = []
    for y0, x0, y1, x1 in windows:
        clipped = np.clip(gt_boxes, [x0, y0, x0, y0], [x1, y1, x1, y1])
        visible = (clipped[:, 2] - clipped[:, 0] > 1) & (clipped[:, 3] - clipped[:, 1] > 1)
        boxes = clipped[visible] - np.array([x0, y0, x0, y0], np.float32)
        scores = np.full(visible.sum(), score, np.float32) - 0.001 * np.arange(visible.sum())
        parts.append(((y0, x0, y1, x1), boxes, scores, gt_labels[visible]))
    return parts


def scene(rng, n, hw=(1500, 1700), sizes=(10, 90), cell=100):
    """n objects of random sizes, one in each of n random cells of a grid: no two overlap (NMS
    would rightly merge overlapping ones of a class)."""
    rows, cols = hw[0] // cell, hw[1] // cell
    picked = rng.choice(rows * cols, n, replace=False)
    side = rng.uniform(*sizes, (n, 2))
    y0 = picked // cols * cell + rng.uniform(0, cell - side[:, 0])
    x0 = picked % cols * cell + rng.uniform(0, cell - side[:, 1])
    boxes = np.stack([x0, y0, x0 + side[:, 1], y0 + side[:, 0]], axis=1).astype(np.float32)
    return boxes, rng.integers(0, 3, n).astype(np.int32)


def test_a_perfect_detector_through_the_windows_gives_each_object_once():
    """Objects no larger than the overlap: each is whole in some window, so its cut views go
    and it is found once, with its own box; no two detections of one class overlap."""
    rng = np.random.default_rng(0)
    gt_boxes, gt_labels = scene(rng, 200)
    windows = tiling.tile_windows((1500, 1700), tile=512, overlap=0.2)  # overlap ~102 px
    parts = oracle_parts(gt_boxes, gt_labels, windows)
    total = sum(len(p[1]) for p in parts)
    assert total > 330  # objects seen in several windows, some of them cut
    merged = tiling.merge_detections(parts, (1500, 1700), iou=0.5)
    assert len(merged['boxes']) == len(gt_boxes)
    found = {
        (*np.round(b, 3).tolist(), int(lab))
        for b, lab in zip(merged['boxes'], merged['labels'], strict=True)
    }
    truth = {
        (*np.round(b, 3).tolist(), int(lab)) for b, lab in zip(gt_boxes, gt_labels, strict=True)
    }
    assert found == truth
    assert (np.diff(merged['scores']) <= 0).all() and merged['valid'].all()


def same_objects(merged, gt_boxes, gt_labels, tol=1.0) -> bool:
    """One detection for each object, of its class, its box within `tol` pixels."""
    if len(merged['boxes']) != len(gt_boxes):
        return False
    free = np.ones(len(gt_boxes), bool)
    for box, label in zip(merged['boxes'], merged['labels'], strict=True):
        close = free & (gt_labels == label) & (np.abs(gt_boxes - box).max(axis=1) <= tol)
        if not close.any():
            return False
        free[np.argmax(close)] = False
    return True


@settings(max_examples=12, deadline=None)
@given(
    st.integers(0, 2**16),
    st.sampled_from([(256, 0.1, (30, 90)), (128, 0.2, (10, 90)), (200, 0.05, (20, 95))]),
)
@example(33, (128, 0.2, (10, 90)))  # a 29-px object ending 1.4 px past both windows' edges
def test_objects_larger_than_the_overlap_merge_back_into_one(seed, layout):
    """Small overlaps and objects up to 95 px: most are cut in every window that sees them;
    their views merge across the seams (corners included) into the whole box."""
    tile, overlap, sizes = layout
    gt_boxes, gt_labels = scene(np.random.default_rng(seed), 200, sizes=sizes)
    windows = tiling.tile_windows((1500, 1700), tile, overlap)
    parts = oracle_parts(gt_boxes, gt_labels, windows)
    merged = tiling.merge_detections(parts, (1500, 1700), iou=0.5)
    assert same_objects(merged, gt_boxes, gt_labels)


def test_merge_rules_on_hand_made_windows():
    left, right = (0, 0, 100, 100), (0, 80, 100, 180)  # overlap: x 80..100
    whole_in_left = np.array([[82, 10, 96, 30]], np.float32)  # inside the overlap: both see it
    parts = [
        (left, whole_in_left, np.array([0.8]), np.array([1])),
        (right, whole_in_left - [80, 0, 80, 0], np.array([0.7]), np.array([1])),
        # an object cut by the left window's inner edge (x=100), whole in the right one
        (left, np.array([[90, 50, 100, 70]], np.float32), np.array([0.9]), np.array([2])),
        (right, np.array([[10, 50, 30, 70]], np.float32), np.array([0.6]), np.array([2])),
        # a large object cut in both windows (wider than the overlap): its views merge
        (left, np.array([[40, 80, 100, 95]], np.float32), np.array([0.5]), np.array([0])),
        (right, np.array([[0, 80, 60, 95]], np.float32), np.array([0.4]), np.array([0])),
    ]
    merged = tiling.merge_detections(parts, (100, 180), iou=0.5)
    got = sorted(
        (int(lab), tuple(b.tolist()))
        for b, lab in zip(merged['boxes'], merged['labels'], strict=True)
    )
    assert got == [
        (0, (40.0, 80.0, 140.0, 95.0)),  # the union of the two views
        (1, (82.0, 10.0, 96.0, 30.0)),  # the better of two whole views
        (2, (90.0, 50.0, 110.0, 70.0)),  # the whole view, not the cut one of higher score
    ]
    # an object on the image's top border: the left window sees it whole (its top side is the
    # image's, not an inner edge), the right one cut by its inner left edge, with a higher score
    on_border = [
        (left, np.array([[70, 0, 90, 20]], np.float32), np.array([0.5]), np.array([3])),
        (right, np.array([[0, 0, 10, 20]], np.float32), np.array([0.9]), np.array([3])),
    ]
    merged = tiling.merge_detections(on_border, (100, 180), iou=0.5)
    np.testing.assert_array_equal(merged['boxes'], [[70, 0, 90, 20]])
    empty = tiling.merge_detections([], (10, 10), iou=0.5)
    assert empty['boxes'].shape == (0, 4) and empty['scores'].shape == (0,)
    none_found = tiling.merge_detections(
        [(left, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int32))], (100, 180), iou=0.5
    )
    assert none_found['boxes'].shape == (0, 4) and none_found['labels'].dtype == np.int32


@pytest.mark.slow
def test_one_window_equals_the_whole_image_predictor(smoke_run):
    """An image no larger than a tile: its sliced detections are the predictor's own; a larger
    one runs its windows in batches and maps them into its pixels."""
    import dataclasses

    from retinanet_jax.data import shapes
    from retinanet_jax.inference import load_predictor

    predictor = load_predictor(smoke_run[0])
    post = dataclasses.replace(predictor.postprocess, score_threshold=LOW_SCORE)
    predictor = dataclasses.replace(predictor, postprocess=post)
    image = shapes.generate_example(3, 'validation', image_size=64)['image']
    (want,) = predictor.predict_images([image], 8)  # batches of 8: the tiles' program
    got = tiling.predict_tiled(predictor, [image], tiling.TileConfig(64, 0.2))[0]
    keep = want['valid']
    assert keep.sum() > 5
    np.testing.assert_array_equal(got['labels'], want['labels'][keep])
    np.testing.assert_allclose(got['boxes'], want['boxes'][keep], atol=1e-4)
    np.testing.assert_allclose(got['scores'], want['scores'][keep], atol=1e-6)

    large = np.concatenate([np.concatenate([image, image[:, ::-1]], 1)] * 2, 0)  # 128 x 128
    tiles = tiling.TileConfig(64, 0.25)  # the smoke model's scale-1 tile
    dets = tiling.predict_tiled(predictor, [large, image], tiles)
    assert len(dets) == 2 and len(dets[0]['boxes']) > 0
    assert (dets[0]['boxes'] >= 0).all() and (dets[0]['boxes'] <= 128).all()
    np.testing.assert_array_equal(dets[1]['labels'], want['labels'][keep])
    # the top-left window is the image itself: its objects away from the window's inner
    # edges are found where the whole-image predictor finds them
    inside = want['valid'] & (want['boxes'][:, 2] < 60) & (want['boxes'][:, 3] < 60)
    for box, label in zip(want['boxes'][inside][:3], want['labels'][inside][:3], strict=True):
        same = (dets[0]['labels'] == label) & (np.abs(dets[0]['boxes'] - box).max(1) < 1e-3)
        assert same.any(), (box, label)


def test_windows_map_back_by_their_offsets_and_pad_to_a_whole_tile(smoke_run):
    """A non-square image whose windows differ in x and y: each window's detections come back
    shifted by its own (x0, y0); a window cut short by the image is padded to a whole tile, so
    it runs at the scale of the others."""
    from retinanet_jax.inference import load_predictor

    predictor = load_predictor(smoke_run[0])
    seen = []

    def fake_examples(examples, batch_size):
        for e in examples:  # a box at (20, 10)-(30, 16) of each window, in its pixels
            seen.append(e['image'].shape[:2])
            yield {
                'boxes': np.array([[20, 10, 30, 16]], np.float32),
                'scores': np.array([0.9], np.float32),
                'labels': np.array([1], np.int32),
                'valid': np.array([True]),
            }

    predictor.__dict__['predict_examples'] = fake_examples  # the batched step, replaced
    image = np.zeros((100, 150, 3), np.uint8)
    (dets,) = tiling.predict_tiled(predictor, [image], tiling.TileConfig(64, 0.25))
    windows = tiling.tile_windows((100, 150), 64, 0.25)  # y 0, 36; x 0, 48, 86
    want = sorted((x0 + 20.0, y0 + 10.0, x0 + 30.0, y0 + 16.0) for y0, x0, _, _ in windows)
    assert sorted(map(tuple, dets['boxes'].tolist())) == want
    assert len(set(seen)) == 1  # every window preprocessed to one canvas


def test_windows_of_many_images_share_fixed_size_batches(smoke_run):
    """predict_examples: every call gets the same batch size (the last batch padded with
    copies), and each example's detections come back in order."""
    from retinanet_jax.inference import load_predictor

    predictor = load_predictor(smoke_run[0])
    calls, images = [], []

    def fake_predict(state, batch):  # the image's first pixel as its only detection's score
        calls.append(batch['image'].shape[0])
        images.append(np.asarray(batch['image']))
        first = np.asarray(batch['image'])[:, 0, 0, 0].astype(np.float32)
        return {'scores': first[:, None], 'valid': np.ones((len(first), 1), bool)}

    predictor.__dict__['predict'] = fake_predict  # the cached jitted step, replaced
    examples = [{'image': np.full((64, 64, 3), i, np.uint8)} for i in range(7)]
    out = list(predictor.predict_examples(iter(examples), batch_size=3))
    assert calls == [3, 3, 3]
    assert [float(d['scores'][0]) for d in out] == list(range(7))
    # A process with fewer windows than another makes up the difference with blank calls.
    tiling.idle_calls(predictor, tiling.TileConfig(64, 0.0, 3), 2)
    tiling.idle_calls(predictor, tiling.TileConfig(64, 0.0, 3), 0)
    assert calls == [3] * 5  # blank windows on the canvas a real 64-px window has
    assert all(im.shape == (3, 64, 64, 3) and (im == PAD_VALUE).all() for im in images[3:])


def test_small_images_share_calls_until_their_windows_fill_them():
    """image_groups (golden, one device: calls of 8): a group closes where its windows fill
    whole calls or reach four calls, so no call is padded but the last."""
    windows_of = {1: (64, 64), 3: (64, 192), 5: (64, 320), 40: (320, 512)}  # tile 64, no overlap
    tiles = tiling.TileConfig(64, 0.0, 8)

    def groups(counts):
        images = [np.zeros((*windows_of[c], 3), np.uint8) for c in counts]
        out = tiling.image_groups(None, enumerate(images), tiles, lambda item: item[1])
        return [[counts[i] for i, _ in group] for group in out]

    assert groups([1] * 10) == [[1] * 8, [1, 1]]
    assert groups([3] * 9) == [[3] * 8, [3]]  # 24 windows: three whole calls
    assert groups([1, 40, 1]) == [[1, 40], [1]]  # 41 >= four calls
    assert groups([3] * 11) == [[3] * 8, [3] * 3]
    assert groups([5] * 8) == [[5] * 7, [5]]  # 35 >= four calls
    assert groups([]) == []

    def calls(counts):  # what several processes compare before predicting (tiling.idle_calls)
        return tiling.call_count(None, [windows_of[c] for c in counts], tiles)

    assert [calls([1] * 10), calls([3] * 9), calls([1, 40, 1]), calls([5] * 8), calls([])] == [
        2,
        4,
        7,
        6,
        0,
    ]


def test_predict_files_by_tiles_batches_a_folders_images_and_skips_the_unreadable(
    smoke_run, tmp_path
):
    """predict --tile_size on a folder of small images: their windows share calls, each file
    gets its own detections (its first pixel as their score), in file order; an unreadable
    file is skipped and named."""
    from retinanet_jax.commands.predict import predict_files
    from retinanet_jax.inference import load_predictor

    predictor = load_predictor(smoke_run[0])
    calls = []

    def fake_predict(state, batch):  # one box per window, scored by its first pixel
        images = np.asarray(batch['image'])
        calls.append(len(images))
        n = len(images)
        return {
            'boxes': np.tile(np.float32([[2, 2, 20, 20]]), (n, 1, 1)),
            'scores': images[:, :1, 0, 0].astype(np.float32) / 255,
            'labels': np.zeros((n, 1), np.int32),
            'valid': np.ones((n, 1), bool),
        }

    predictor.__dict__['predict'] = fake_predict
    for i in range(5):
        Image.fromarray(np.full((64, 64, 3), 10 * (i + 1), np.uint8)).save(tmp_path / f'{i}.png')
    (tmp_path / '2b.png').write_bytes(b'not an image')
    results = predict_files(
        predictor, [str(tmp_path)], tmp_path / 'out', tiles=tiling.TileConfig(64)
    )
    assert calls == [8]  # five one-window images, one call
    assert [r['file_name'] for r in results] == [f'{i}.png' for i in range(5)]
    assert [round(r['score'] * 255) for r in results] == [10, 20, 30, 40, 50]
    assert not (tmp_path / 'out' / '2b.png').exists()


@pytest.mark.slow
def test_evaluating_by_tiles_of_the_image_size_is_evaluating_whole_images(smoke_run, tmp_path):
    """On images no larger than a tile, sliced evaluation (Prepared.run, what evaluate and
    analyze run) gives the whole-image evaluation's metrics: the same detections. The ground
    truth is the smoke model's own best detections at a low score threshold (a 4-step model's
    scores are low), so that the metrics are not all zero."""
    import dataclasses
    import json

    from retinanet_jax.data import shapes_files
    from retinanet_jax.evaluation import split_evaluation
    from retinanet_jax.evaluation.coco_metrics import EvaluationConfig
    from retinanet_jax.inference.predictor import call_size

    options = shapes_files.write_coco_folder(tmp_path / 'data', 4)
    dataset_options = {**options, 'annotations': {'validation': str(tmp_path / 'own.json')}}
    coco = json.loads(Path(options['annotations']['validation']).read_text())
    (tmp_path / 'own.json').write_text(json.dumps(coco))
    prepared = split_evaluation.prepare(
        smoke_run[0], 'validation', dataset='coco_folder', dataset_options=dataset_options
    )
    p = prepared.predictor
    p = dataclasses.replace(
        p, postprocess=dataclasses.replace(p.postprocess, score_threshold=LOW_SCORE)
    )
    coco['annotations'] = []
    images = [Image.open(Path(options['image_dir']) / im['file_name']) for im in coco['images']]
    found = p.predict_images([np.asarray(im.convert('RGB')) for im in images], 8)
    for im, dets in zip(coco['images'], found, strict=True):
        keep = dets['valid']
        best = zip(dets['boxes'][keep][:5], dets['labels'][keep][:5], strict=True)
        for (x1, y1, x2, y2), label in best:
            coco['annotations'].append(
                {
                    'id': len(coco['annotations']) + 1,
                    'image_id': im['id'],
                    'iscrowd': 0,
                    'category_id': int(label) + 1,
                    'bbox': [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                }
            )
    assert len(coco['annotations']) == 20
    (tmp_path / 'own.json').write_text(json.dumps(coco))
    prepared = split_evaluation.prepare(
        smoke_run[0], 'validation', dataset='coco_folder', dataset_options=dataset_options
    )
    evaluation = split_evaluation.SplitEvaluation.make(  # the run's batch: its eval program
        p.graphdef,
        p.input,
        p.anchors,
        p.postprocess,
        p.loss,
        prepared.source,
        'validation',
        p.settings.batch_size,
        p.mesh,
        EvaluationConfig(),
    )
    prepared = dataclasses.replace(prepared, predictor=p, evaluation=evaluation)
    whole = prepared.run()
    calls, step = [], p.predict
    p.__dict__['predict'] = lambda state, batch: (
        calls.append(len(batch['image'])) or step(state, batch)
    )
    tiled = prepared.run(tiling.TileConfig(64))
    assert calls == [call_size(8)]  # the 4 images' windows share one batch
    assert 'val_loss' not in tiled and whole['AP50'] > 0.5
    for name in ('AP', 'AP50', 'AR100', 'P', 'R', 'F1', 'best_F1'):
        assert tiled[name] == pytest.approx(whole[name], abs=1e-6), name
