"""Pictures of an evaluation, for people to look at (TensorBoard images, analysis files).

pr_curve_picture({iou: {class name: (recall [R], precision [R])}}) -> uint8 [H, W, 3]
    one panel per IoU threshold, one curve per class (coco_metrics.CocoEvaluator.pr_curves)
prediction_pictures(images uint8 [N, H, W, 3], gt_boxes [N, M, 4] xyxy pixels of the image,
                    gt_labels [N, M] (-1: padding), detections {'boxes' [N, D, 4] xyxy pixels
                    of the image, 'scores' [N, D], 'labels' [N, D], 'valid' [N, D]}, names,
                    min_score) -> uint8 [N, zH, 2zW, 3]
    each image twice, side by side (side_by_side): its ground truth (left), the detections
    from min_score with their scores (right); z >= 1 enlarges small images for legible labels
confusion_matrix_picture(matrix [K + 1, K + 1], names) -> uint8: rows normalised, counts shown
errors_picture({error type: {class name: dAP}}) -> uint8: TIDE's breakdown as grouped bars
"""

import numpy as np
from matplotlib.figure import Figure  # matplotlib's object API: no pyplot state, no display

from retinanet_jax import visualize


def pr_curve_picture(curves: dict[float, dict[str, tuple]], title: str = '') -> np.ndarray:
    """Precision against recall, a panel per IoU threshold, a line per class (with its AP, the
    mean of the precisions: COCO's 101-point average)."""
    fig = Figure(figsize=(4.2 * max(len(curves), 1), 4))
    if not curves:  # the evaluation has neither IoU threshold
        fig.text(0.5, 0.5, 'no PR curve: IoU 0.5 / 0.75 not evaluated', ha='center')
        return visualize.figure_array(fig)
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
    return visualize.figure_array(fig)


MIN_SIDE = 256  # smaller images are enlarged (pixels repeated) to at least this, for the labels


def side_by_side(image, truth: tuple, found: tuple, names, min_score: float = 0.3) -> np.ndarray:
    """One image uint8 [H, W, 3] twice, side by side: `truth` (boxes [M, 4] xyxy pixels, labels
    [M]) drawn on the left, `found` (boxes [D, 4], scores [D], labels [D]) from `min_score`
    with their scores on the right; enlarged z times (z whole, pixels repeated) where its short
    side is under MIN_SIDE, so that the labels stay legible: uint8 [zH, 2zW, 3]."""
    image = np.asarray(image, np.uint8)
    z = max(1, -(-MIN_SIDE // max(1, min(image.shape[:2]))))
    big = np.repeat(np.repeat(image, z, axis=0), z, axis=1)
    boxes, labels = truth
    left = visualize.draw_boxes(big, np.asarray(boxes, np.float64) * z, labels, names)
    boxes, scores, labels = found
    keep = np.asarray(scores) >= min_score
    right = visualize.draw_boxes(
        big,
        np.asarray(boxes, np.float64)[keep] * z,
        np.asarray(labels)[keep],
        names,
        np.asarray(scores)[keep],
    )
    return np.concatenate([np.asarray(left), np.asarray(right)], axis=1)


def prediction_pictures(
    images, gt_boxes, gt_labels, detections: dict, names, min_score: float = 0.3
) -> np.ndarray:
    """The ground truth and the detections of each image, side by side (module docstring)."""
    pictures = []
    for i, image in enumerate(np.asarray(images)):
        real = np.asarray(gt_labels[i]) >= 0
        valid = np.asarray(detections['valid'][i], bool)
        pictures.append(
            side_by_side(
                image,
                (np.asarray(gt_boxes[i])[real], np.asarray(gt_labels[i])[real]),
                tuple(np.asarray(detections[k][i])[valid] for k in ('boxes', 'scores', 'labels')),
                names,
                min_score,
            )
        )
    return np.stack(pictures) if pictures else np.zeros((0, 1, 2, 3), np.uint8)


def confusion_matrix_picture(matrix: np.ndarray, names, title: str = '') -> np.ndarray:
    """error_analysis.confusion_matrix's [K + 1, K + 1] counts as a heat map, each row
    normalised by its total (the share of a class's objects found as each class or missed),
    counts written in the cells."""
    matrix = np.asarray(matrix)
    rows = [*names, 'false positive']
    columns = [*names, 'missed']
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = 1.2 + 0.55 * len(columns)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    image = ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label='share of the row')
    for (r, c), n in np.ndenumerate(matrix):
        colour = 'white' if share[r, c] > 0.6 else 'black'
        ax.text(c, r, str(n), ha='center', va='center', color=colour, fontsize=8)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha='right')
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel='predicted class', ylabel='ground truth', title=title)
    fig.tight_layout()
    return visualize.figure_array(fig)


def errors_picture(d_ap: dict[str, dict[str, float]], title: str = '') -> np.ndarray:
    """TIDE's dAP per error type (error_analysis.tide_errors) as grouped bars, one group per
    class: {error type: {class name: dAP}}, 'all' (the mean) included if given."""
    errors = list(d_ap)
    classes = list(next(iter(d_ap.values()))) if d_ap else []
    fig = Figure(figsize=(1.5 + 0.9 * max(len(classes), 1) * max(len(errors), 1) / 4, 4))
    ax = fig.subplots()
    width = 0.8 / max(len(errors), 1)
    for e, error in enumerate(errors):
        xs = np.arange(len(classes)) + (e - (len(errors) - 1) / 2) * width
        ax.bar(xs, [d_ap[error][c] for c in classes], width, label=error)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha='right')
    ax.set(ylabel='AP50 gained by fixing (dAP)', title=title)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8, ncols=3)
    fig.tight_layout()
    return visualize.figure_array(fig)
