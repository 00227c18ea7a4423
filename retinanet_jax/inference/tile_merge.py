"""The windows of sliced inference (tiling.py) and the merge of their detections into one
detection per object, in the image's pixels. numpy alone: every export carries a copy, for its
detect.py (inference/export.py).

  windows = tile_windows((H, W), tile, overlap)   # int64 [T, 4] (y0, x0, y1, x1), row by row
  pixels = window_pixels(image, windows[t], tile, pad_value)  # padded to a whole tile
  merged = merge_detections(parts, image_hw, iou)
  parts:  [(window (y0, x0, y1, x1), boxes [n, 4] xyxy in the window's pixels, scores [n],
            labels [n])], one per window
  merged: 'boxes' float32 [N, 4] xyxy in the image's pixels (clipped to it), 'scores' [N],
          'labels' int32 [N], 'valid' bool [N] (all True); best score first

For each class:
  - a detection is *cut* when its box comes within `edge` pixels of an inner side of its
    window (a side that is not on the image's border): the window saw part of the object;
  - the detections that are not cut (whole views) go through greedy NMS at `iou`, best score
    first (an object whole in two windows of an overlap gives the same box twice);
  - a cut view that lies mostly inside a kept whole view (intersection over its own area >=
    `match`, SAHI's "IOS") or overlaps one beyond `iou` is dropped: a neighbouring window holds
    the object whole (every object no larger than the overlap is whole somewhere);
  - the cut views left belong to objects larger than the overlap, cut in every window that
    sees them: two views of different windows where one is cut at a side of its window and the
    other runs on across that line, with the same extent along it (1-D IoU >= 0.5), are parts
    of one object, merged into their union with the best score (union-find: an object cut four
    ways at a corner is one);
  - merged objects, largest first, are dropped where a kept detection already gives them
    (IoU beyond `iou`, or lying mostly inside it).
Only detections near each other are compared (a grid of cells the size of a window), so an
image of tens of thousands of detections merges in seconds, on the host in numpy.
"""

import collections

import numpy as np


def merge_detections(parts, image_hw, iou: float, edge: float = 2.0, match: float = 0.5) -> dict:
    """One detection per object from an image's windows (see the module docstring)."""
    boxes, scores, labels, sides, window = _gather(parts, image_hw, edge)
    cell = float(max((w[2] - w[0] for w, *_ in parts), default=64) or 64)
    cut = sides.any(axis=1)
    out = []
    for label in np.unique(labels):
        (mine,) = np.nonzero(labels == label)
        kept = _Grid(boxes, cell)
        for k in _by_score(scores, mine[~cut[mine]]):  # whole views: greedy NMS
            inter, _, union = kept.overlaps(boxes[k])
            if not (inter > iou * union).any():
                kept.add(k)
        views = []
        for k in mine[cut[mine]]:  # cut views no whole view gives
            inter, area, union = kept.overlaps(boxes[k])
            if not ((inter >= match * area).any() or (inter > iou * union).any()):
                views.append(k)
        merged = [_union(boxes, scores, g) for g in _seam_groups(boxes, sides, window, views)]
        found = [(boxes[k], scores[k]) for k in kept.items]
        grid = _Grid(np.array([f[0] for f in found] + [m[0] for m in merged]).reshape(-1, 4), cell)
        whole = len(found)
        for i in range(whole):
            grid.add(i)
        for i in sorted(range(len(merged)), key=lambda i: -_area(merged[i][0])):
            box = merged[i][0]  # largest first: a part of an object already kept goes
            inter, area, union = grid.overlaps(box)
            if not ((inter > iou * union).any() or (inter >= match * area).any()):
                grid.add(whole + i)
                found.append(merged[i])
        out += [(box, score, label) for box, score in found]
    out.sort(key=lambda d: -d[1])
    return {
        'boxes': np.array([d[0] for d in out], np.float32).reshape(-1, 4),
        'scores': np.array([d[1] for d in out], np.float32),
        'labels': np.array([d[2] for d in out], np.int32),
        'valid': np.ones(len(out), bool),
    }


def _gather(parts, image_hw, edge: float):
    """The windows' detections in the image's pixels: boxes [n, 4] (clipped), scores [n],
    labels [n], sides [n, 4] (cut at its window's left, top, right, bottom), window [n, 4]."""
    boxes, scores, labels, sides, window = [np.zeros((0, 4), np.float32)], [], [], [], []
    h, w = image_hw
    for (y0, x0, y1, x1), b, s, lab in parts:
        b = np.asarray(b, np.float32).reshape(-1, 4) + np.array([x0, y0, x0, y0], np.float32)
        inner = np.array([x0 > 0, y0 > 0, x1 < w, y1 < h])  # the window's sides inside the image
        near = np.stack(
            [
                b[:, 0] <= x0 + edge,
                b[:, 1] <= y0 + edge,
                b[:, 2] >= x1 - edge,
                b[:, 3] >= y1 - edge,
            ],
            axis=1,
        )
        boxes.append(b)
        scores.append(np.asarray(s, np.float32).reshape(-1))
        labels.append(np.asarray(lab, np.int32).reshape(-1))
        sides.append(near & inner)
        window.append(np.tile(np.array([[y0, x0, y1, x1]], np.float32), (len(b), 1)))
    boxes = np.clip(np.concatenate(boxes), 0, np.array([w, h, w, h], np.float32))
    return (
        boxes,
        np.concatenate(scores) if scores else np.zeros(0, np.float32),
        np.concatenate(labels) if labels else np.zeros(0, np.int32),
        np.concatenate(sides) if sides else np.zeros((0, 4), bool),
        np.concatenate(window) if window else np.zeros((0, 4), np.float32),
    )


class _Grid:
    """Indices of `boxes` added one by one, found again by the cells they overlap."""

    def __init__(self, boxes: np.ndarray, cell: float):
        self.boxes, self.cell = boxes, cell
        self.cells = collections.defaultdict(list)
        self.items = []

    def _keys(self, box):
        x0, y0, x1, y1 = (int(v // self.cell) for v in box)
        return [(i, j) for i in range(y0, y1 + 1) for j in range(x0, x1 + 1)]

    def add(self, k: int) -> None:
        self.items.append(k)
        for key in self._keys(self.boxes[k]):
            self.cells[key].append(k)

    def near(self, box) -> np.ndarray:
        found = {k for key in self._keys(box) for k in self.cells.get(key, ())}
        return np.fromiter(found, np.int64, len(found))

    def overlaps(self, box):
        """(intersection, the box's area, union) with each added box near it."""
        return _overlaps(box, self.boxes[self.near(box)])


def _by_score(scores, indices) -> list:
    return sorted(indices, key=lambda k: (-scores[k], k))


def _seam_groups(boxes, sides, window, views: list) -> list[list[int]]:
    """The cut views (indices) grouped into objects (union-find): two views of different
    windows are parts of one object where one is cut at a side of its window and the other
    runs on across that line, and their extents along the line agree (1-D IoU >= 0.5)."""
    parent = {k: k for k in views}

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    cell = float(np.max(window[views, 2] - window[views, 0])) if views else 1.0
    grid = _Grid(boxes, cell)
    for k in views:
        grid.add(k)
    for i in views:
        others = grid.near(boxes[i])
        others = others[(window[others] != window[i]).any(axis=1)]
        one = np.zeros(len(others), np.int64) + i  # view i, against each of the others
        linked = _continues(boxes[one], sides[one], window[one], boxes[others]) | (
            _continues(boxes[others], sides[others], window[others], boxes[one])
        )
        for j in others[linked]:
            parent[root(int(j))] = root(i)
    groups = collections.defaultdict(list)
    for k in views:
        groups[root(k)].append(k)
    return list(groups.values())


def _continues(cut, sides, window, other) -> np.ndarray:
    """Whether each view of `other` [n, 4] runs on across a line where the matching view of
    `cut` [n, 4] (its `sides` [n, 4] and `window` [n, 4] (y0, x0, y1, x1)) is cut, with the
    same extent along that line."""
    x0, y0, x1, y1 = cut.T
    u0, v0, u1, v1 = other.T
    wy0, wx0, wy1, wx1 = window.T
    along_y, along_x = _iou_1d(y0, y1, v0, v1) >= 0.5, _iou_1d(x0, x1, u0, u1) >= 0.5
    # Across the line by any amount: a view counts as cut within `edge` of its window's side,
    # so an object may end less than `edge` beyond it (a case the hypothesis test found).
    return (
        (sides[:, 0] & along_y & (u0 < wx0) & (u1 > wx0))
        | (sides[:, 2] & along_y & (u1 > wx1) & (u0 < wx1))
        | (sides[:, 1] & along_x & (v0 < wy0) & (v1 > wy0))
        | (sides[:, 3] & along_x & (v1 > wy1) & (v0 < wy1))
    )


def _iou_1d(a0, a1, b0, b1):
    inter = np.maximum(0.0, np.minimum(a1, b1) - np.maximum(a0, b0))
    return inter / np.maximum(a1 - a0 + b1 - b0 - inter, 1e-9)


def _area(box) -> float:
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def _union(boxes, scores, group: list[int]):
    """(the union box of a group's views, their best score)."""
    b = boxes[group]
    return np.array([*b[:, :2].min(0), *b[:, 2:].max(0)], np.float32), float(scores[group].max())


def _overlaps(box, others):
    """(intersection [K], the box's area, union [K]) of one xyxy box with K others."""
    lo = np.maximum(box[:2], others[:, :2])
    hi = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(np.clip(box[2:] - box[:2], 0, None))
    areas = np.prod(np.clip(others[:, 2:] - others[:, :2], 0, None), axis=1)
    return inter, area, area + areas - inter


def tile_windows(image_hw: tuple[int, int], tile: int, overlap: float) -> np.ndarray:
    """int64 [T, 4] windows (y0, x0, y1, x1) covering an image of `image_hw`, row by row."""
    if tile < 1:
        raise ValueError(f'tile size must be >= 1, got {tile}')
    if not 0 <= overlap < 1:
        raise ValueError(f'tile overlap must be in [0, 1), got {overlap}')
    stride = max(1, round(tile * (1 - overlap)))
    starts = [_starts(side, tile, stride) for side in image_hw]
    ys, xs = np.meshgrid(*starts, indexing='ij')
    h, w = (min(tile, side) for side in image_hw)
    y0, x0 = ys.ravel(), xs.ravel()
    return np.stack([y0, x0, y0 + h, x0 + w], axis=1).astype(np.int64)


def _starts(side: int, tile: int, stride: int) -> np.ndarray:
    if side <= tile:
        return np.zeros(1, np.int64)
    starts = np.arange(0, side - tile, stride)
    return np.append(starts, side - tile)  # the last window ends at the edge


def window_pixels(image, window, tile: int, pad_value) -> np.ndarray:
    """uint8 [h, w, 3]: the pixels of `window` (y0, x0, y1, x1) of `image` (an array, or a
    raster sliced by rows and columns), padded bottom / right with `pad_value` to a whole
    tile where the image has other windows too, so that every window runs at one scale."""
    y0, x0, y1, x1 = window
    pixels = np.asarray(image[y0:y1, x0:x1])
    h, w = pixels.shape[:2]
    if (h, w) in (tuple(image.shape[:2]), (tile, tile)):
        return pixels
    canvas = np.empty((tile, tile, 3), np.uint8)
    canvas[...] = pad_value
    canvas[:h, :w] = pixels
    return canvas
