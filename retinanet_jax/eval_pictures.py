"""Pictures of an evaluation, for people to look at (TensorBoard images, analysis files).

pr_curve_picture({iou: {class name: (recall [R], precision [R])}}) -> uint8 [H, W, 3]
    one panel per IoU threshold, one curve per class (coco_metrics.CocoEvaluator.pr_curves)
prediction_pictures(images uint8 [N, H, W, 3], gt_boxes [N, M, 4] xyxy pixels of the image,
                    gt_labels [N, M] (-1: padding), detections {'boxes' [N, D, 4] xyxy pixels
                    of the image, 'scores' [N, D], 'labels' [N, D], 'valid' [N, D]}, names,
                    min_score) -> uint8 [N, zH, 2zW, 3]
    each image twice, side by side: its ground truth (left), the detections from min_score
    with their scores (right)
"""

import io

import numpy as np
from matplotlib.figure import Figure  # matplotlib's object API: no pyplot state, no display
from PIL import Image

from retinanet_jax import visualize


def pr_curve_picture(curves: dict[float, dict[str, tuple]], title: str = '') -> np.ndarray:
    """Precision against recall, a panel per IoU threshold, a line per class (with its AP, the
    mean of the precisions: COCO's 101-point average)."""
    fig = Figure(figsize=(4.2 * len(curves), 4))
    axes = fig.subplots(1, len(curves), squeeze=False)
    for ax, (iou, by_class) in zip(axes[0], sorted(curves.items()), strict=True):
        for name, (recall, precision) in by_class.items():
            ax.plot(recall, precision, label=f'{name} {np.mean(precision):.3f}')
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel='recall', ylabel='precision')
        ax.set_title(f'{title} IoU {iou:g}'.strip())
        ax.grid(alpha=0.3)
        if by_class:
            ax.legend(loc='lower left', fontsize=8, title='class, AP')
    fig.tight_layout()
    return figure_array(fig)


def figure_array(fig) -> np.ndarray:
    """A matplotlib Figure as uint8 RGB [H, W, 3]."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    return np.asarray(Image.open(buffer).convert('RGB'))


MIN_SIDE = 256  # smaller images are enlarged (pixels repeated) to at least this, for the labels


def prediction_pictures(
    images, gt_boxes, gt_labels, detections: dict, names, min_score: float = 0.3
) -> np.ndarray:
    """The ground truth and the detections of each image, side by side (module docstring)."""
    pictures = []
    for i, image in enumerate(np.asarray(images)):
        real = np.asarray(gt_labels[i]) >= 0
        truth = visualize.draw_boxes(
            image, np.asarray(gt_boxes[i])[real], gt_labels[i][real], names
        )
        keep = np.asarray(detections['valid'][i]) & (detections['scores'][i] >= min_score)
        found = visualize.draw_boxes(
            image,
            np.asarray(detections['boxes'][i])[keep],
            np.asarray(detections['labels'][i])[keep],
            names,
            np.asarray(detections['scores'][i])[keep],
        )
        pictures.append(np.concatenate([np.asarray(truth), np.asarray(found)], axis=1))
    return np.stack(pictures) if pictures else np.zeros((0, 1, 2, 3), np.uint8)
