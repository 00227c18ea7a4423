"""Random detection problems shared by the tests."""

import numpy as np


def random_boxes(rng: np.random.Generator, n: int, image_hw=(128, 160), min_size=8, max_size=96):
    """[n, 4] float32 xyxy boxes of random size, centred inside the image, clipped to it."""
    h, w = image_hw
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    bw, bh = rng.uniform(min_size, max_size, n), rng.uniform(min_size, max_size, n)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    boxes = np.clip(boxes, 0, [w, h, w, h])
    return boxes.astype(np.float32)


def random_problem(rng, num_boxes_per_image, num_anchors, num_classes, max_boxes, image_hw):
    """Head outputs plus padded ground truth for len(num_boxes_per_image) images."""
    b = len(num_boxes_per_image)
    cls_logits = rng.normal(0.0, 2.0, (b, num_anchors, num_classes)).astype(np.float32)
    box_deltas = rng.normal(0.0, 0.5, (b, num_anchors, 4)).astype(np.float32)
    gt_boxes = np.zeros((b, max_boxes, 4), np.float32)
    gt_labels = np.full((b, max_boxes), -1, np.int32)
    for i, n in enumerate(num_boxes_per_image):
        gt_boxes[i, :n] = random_boxes(rng, n, image_hw)
        gt_labels[i, :n] = rng.integers(0, num_classes, n)
    return cls_logits, box_deltas, gt_boxes, gt_labels
