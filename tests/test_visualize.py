"""Pictures people look at: labels inside the image and apart from each other."""

import numpy as np

from retinanet_jax import visualize


def rects(positions, sizes):
    return [(x, y, x + w, y + h) for (x, y), (w, h) in zip(positions, sizes, strict=True)]


def overlaps(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_labels_of_one_box_do_not_overlap_and_stay_inside():
    boxes = [[0, 0, 40, 30], [0, 0, 40, 30], [90, 50, 100, 64], [95, 0, 100, 5]]
    sizes = [(50, 11)] * 4  # wider than some boxes, and than the space to the right
    placed = visualize.label_positions(boxes, sizes, (100, 64))
    boxes_of = rects([placed[i] for i in range(4)], sizes)
    for r in boxes_of:
        assert r[0] >= 0 and r[1] >= 0 and r[2] <= 100 and r[3] <= 64  # inside the image
    assert not overlaps(boxes_of[0], boxes_of[1])  # two labels on the same box, apart


def test_a_busy_picture_stays_readable():
    rng = np.random.default_rng(0)
    image = np.zeros((120, 160, 3), np.uint8)
    xy = rng.uniform(0, 150, (20, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (20, 2))], 1)
    labels, scores = rng.integers(0, 3, 20), rng.uniform(0, 1, 20)
    picture = visualize.draw_boxes(image, boxes, labels, ['a', 'b', 'c'], scores, min_score=0.5)
    assert picture.size == (160, 120)
    fewer = visualize.draw_boxes(image, boxes, labels, ['a', 'b', 'c'], scores, min_score=0.9)
    drawn = lambda p: int((np.asarray(p) != 0).any(-1).sum())  # noqa: E731
    assert drawn(fewer) < drawn(picture)  # the threshold is the caller's
    sizes = [(40, 11)] * 12
    placed = visualize.label_positions(boxes[:12], sizes, (160, 120))
    labels_at = rects([placed[i] for i in range(12)], sizes)
    assert all(r[0] >= 0 and r[1] >= 0 and r[2] <= 160 and r[3] <= 120 for r in labels_at)
