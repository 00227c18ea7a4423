"""Per-example transforms on numpy: small functions from example dict to example dict.

An example holds 'image' uint8 [H, W, 3] RGB, 'boxes' float32 [k, 4] xyxy in absolute pixels
of the image the example currently holds, 'labels' int32 [k] (contiguous, 0..K-1),
'is_crowd' bool [k] and 'image_id'. Images stay uint8 throughout (normalisation happens on
the device, see normalization.py). Random transforms take a numpy Generator: the pipeline
seeds one per transform from (config seed, example key), so a run is reproducible whatever
the threading or process count.

Resizing is bilinear on uint8 with half-pixel centres: OpenCV's INTER_LINEAR where the image
grows along both axes (mmdetection's kernel; ~5x PIL's), else PIL's bilinear filter
(detectron2's for uint8 images), whose triangle filter widens by the shrink factor along an
axis that shrinks (antialiasing). Both are TensorFlow's resize(bilinear, antialias=True) and
torchvision's resize(antialias=True) to within one grey level (tests/test_data.py checks
both), and release the GIL.

Fields added along the way (see `pad`): 'orig_size' [2] int32 (h, w of the source image),
'scale' [2] float32 (sy, sx: resized = original * scale), 'content_size' [2] int32 (h, w of the
resized image before padding), 'valid' bool, 'num_boxes_truncated' int32.
"""

import cv2
import numpy as np
from PIL import Image

from retinanet_jax.data.input_config import keep_aspect_size
from retinanet_jax.errors import UserError
from retinanet_jax.ops.normalization import PAD_VALUE


def init_sizes(example: dict) -> dict:
    """Records the original size; scale 1."""
    size = np.array(example['image'].shape[:2], np.int32)
    return {**example, 'orig_size': size, 'content_size': size, 'scale': np.ones(2, np.float32)}


def resize_image(image: np.ndarray, new_hw) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [new_h, new_w, 3], bilinear, antialiased along an axis that
    shrinks (see the module docstring). The same image where the size is unchanged."""
    new_h, new_w = (int(v) for v in new_hw)
    h, w = image.shape[:2]
    if (new_h, new_w) == (h, w):
        return image
    if new_h >= h and new_w >= w:  # enlarging: OpenCV's fixed-point bilinear, ~5x PIL's
        return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def _resize_to(example: dict, new_hw) -> dict:
    new_hw = np.asarray(new_hw, np.int32)
    factor = new_hw.astype(np.float32) / np.array(example['image'].shape[:2], np.float32)
    return {
        **example,
        'image': resize_image(example['image'], new_hw),
        'boxes': example['boxes'] * np.tile(factor[::-1], 2)[None],
        'content_size': new_hw,
        'scale': example['scale'] * factor,
    }


def resize_keep_aspect(example: dict, short_side: float, max_side: float) -> dict:
    """Scales so the short side is `short_side`, unless the long side would exceed `max_side`."""
    return _resize_to(example, keep_aspect_size(example['image'].shape[:2], short_side, max_side))


def resize_square(example: dict, size: int) -> dict:
    """Resizes to size x size, not keeping the aspect ratio (scale differs per axis)."""
    return _resize_to(example, [size, size])


def random_scale_jitter(
    example: dict, short_side: float, max_side: float, low: float, high: float, rng
) -> dict:
    """`resize_keep_aspect` with both targets multiplied by a factor uniform in [low, high)."""
    factor = np.float32(rng.uniform(low, high))
    return resize_keep_aspect(example, short_side * factor, max_side * factor)


def random_horizontal_flip(example: dict, rng) -> dict:
    """Flips image and boxes left-right with probability 1/2."""
    return example if rng.random() >= 0.5 else _flip(example, axis=1)


def random_vertical_flip(example: dict, rng) -> dict:
    """Flips image and boxes top-bottom with probability 1/2."""
    return example if rng.random() >= 0.5 else _flip(example, axis=0)


def _flip(example: dict, axis: int) -> dict:
    """Image and boxes mirrored along `axis` (0: rows, top-bottom; 1: columns, left-right)."""
    image = example['image']
    size = np.float32(image.shape[axis])
    boxes = example['boxes'].copy()
    lo, hi = 1 - axis, 3 - axis  # the box's coordinates along that axis (x: 0, 2; y: 1, 3)
    boxes[:, lo], boxes[:, hi] = size - example['boxes'][:, hi], size - example['boxes'][:, lo]
    return {
        **example,
        'image': cv2.flip(image, axis),  # ~50x faster than copying numpy's negative-stride view
        'boxes': boxes.astype(np.float32),
    }


_ROTATIONS = (None, cv2.ROTATE_90_COUNTERCLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_CLOCKWISE)


def random_rot90(example: dict, rng) -> dict:
    """Rotates image and boxes by k * 90 degrees counter-clockwise, k uniform in 0..3 (an
    (H, W) image becomes (W, H) for odd k)."""
    k = int(rng.integers(4))
    if k == 0:
        return example
    image = example['image']
    h, w = (np.float32(v) for v in image.shape[:2])
    x1, y1, x2, y2 = np.moveaxis(example['boxes'], -1, 0)
    boxes = {
        1: (y1, w - x2, y2, w - x1),
        2: (w - x2, h - y2, w - x1, h - y1),
        3: (h - y2, x1, h - y1, x2),
    }[k]
    rotated = cv2.rotate(image, _ROTATIONS[k])
    return {
        **example,
        'image': rotated,
        'boxes': np.stack(boxes, axis=-1).astype(np.float32),
        'content_size': np.asarray(rotated.shape[:2], np.int32),
    }


def random_color_jitter(example: dict, strengths, rng) -> dict:
    """torchvision's ColorJitter(brightness, contrast, saturation, hue) on uint8, `strengths`
    those four: factors uniform in [max(0, 1 - b), 1 + b] (and [-hue, hue]), applied in a
    random order, each as torchvision's uint8 kernel computes it (float32, clamped,
    truncated). Boxes are unchanged."""
    b, c, s, hue = (float(v) for v in strengths)
    factors = [rng.uniform(max(0.0, 1 - v), 1 + v) for v in (b, c, s)] + [rng.uniform(-hue, hue)]
    image = example['image']
    for op in rng.permutation(4):
        image = _COLOR_OPS[op](image, factors[op])
    return {**example, 'image': image}


def _blend(image: np.ndarray, other, ratio: float) -> np.ndarray:
    out = image.astype(np.float32) * np.float32(ratio) + other * np.float32(1.0 - ratio)
    return np.clip(out, 0, 255).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    r, g, b = np.moveaxis(image.astype(np.float32), -1, 0)
    return np.floor(r * np.float32(0.2989) + g * np.float32(0.587) + b * np.float32(0.114))


def _hue(image: np.ndarray, shift: float) -> np.ndarray:
    """The hue turned by `shift` of a full turn: OpenCV's float HSV (H in degrees)."""
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(shift * 360.0), 360.0)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


_COLOR_OPS = (
    lambda im, f: np.clip(im.astype(np.float32) * np.float32(f), 0, 255).astype(np.uint8),
    lambda im, f: _blend(im, np.float32(_grey(im).mean()), f),
    lambda im, f: _blend(im, _grey(im)[..., None], f),
    _hue,
)


def random_crop(example: dict, max_hw: tuple[int, int], rng) -> dict:
    """Crops a random window of at most max_hw (only where the image is larger); boxes follow."""
    hw = np.array(example['image'].shape[:2], np.int32)
    crop_hw = np.minimum(hw, np.asarray(max_hw, np.int32))
    offset = np.minimum((rng.random(2) * (hw - crop_hw + 1)).astype(np.int32), hw - crop_hw)
    (y, x), (h, w) = offset, crop_hw
    shift = np.array([x, y, x, y], np.float32)[None]
    return {
        **example,
        'image': example['image'][y : y + h, x : x + w],
        'boxes': example['boxes'] - shift,
        'content_size': crop_hw,
    }


def random_rescale(example: dict, low: float, high: float, rng) -> dict:
    """The image and boxes scaled by a factor uniform in [low, high) (unchanged where low ==
    high == 1; the draw is made either way, so the streams after it do not depend on it)."""
    new_hw = rescaled_size(example['image'].shape[:2], low, high, rng)
    if new_hw is None:
        return example
    return _resize_to(example, new_hw)


def rescaled_size(hw, low: float, high: float, rng) -> np.ndarray | None:
    """random_rescale's new (h, w) of an image of size hw, int32 [2]; None where low == high
    == 1 (the image is kept). Draws the factor either way."""
    factor = rng.uniform(low, high)
    if low == high == 1.0:
        return None
    return np.maximum(np.round(np.array(hw, np.float64) * factor), 1).astype(np.int32)


def random_window(
    example: dict, crop_hw: tuple[int, int], min_visible: float, max_empty: float, rng
) -> dict:
    """A crop_hw window of the image at its scale (an axis shorter than the window is taken
    whole, to be padded). A box keeps `min_visible` of its area inside the window or is
    dropped; kept boxes are clipped to it.

    The window holds an object unless the image has none: a box is drawn at random and the
    window placed uniformly among the offsets that hold it whole (where it is larger than
    the window: that lie inside it), except for a share `max_empty` of the examples, whose
    window is placed uniformly over the image; so at most that share of windows is empty (of
    images with objects). Crowd regions are not drawn. Every draw is made whatever the path,
    so the window is a pure function of the rng's seed."""
    image = example['image']
    hw = np.array(image.shape[:2], np.int64)
    win = np.minimum(hw, np.asarray(crop_hw, np.int64))
    room = hw - win  # the largest offset, (y, x)
    uniform, pick, place = rng.random(), rng.random(), rng.random(2)
    boxes = example['boxes'].astype(np.float64)
    candidates = np.flatnonzero(~example['is_crowd'])
    if uniform < max_empty or not len(candidates):
        offset = np.floor(place * (room + 1)).astype(np.int64)
    else:
        x1, y1, x2, y2 = boxes[candidates[int(pick * len(candidates))]]
        # offsets along each axis from the window's far edge on the box's far edge to its near
        # edge on the box's near edge (reversed where the box is larger than the window)
        a = np.array([y2, x2]) - win
        b = np.array([y1, x1])
        lo = np.clip(np.ceil(np.minimum(a, b)), 0, room)
        hi = np.clip(np.floor(np.maximum(a, b)), 0, room)
        hi = np.maximum(hi, lo)
        offset = (lo + np.floor(place * (hi - lo + 1))).astype(np.int64)
        offset = np.minimum(offset, hi.astype(np.int64))
    (y, x), (h, w) = offset, win
    shift = np.array([x, y, x, y], np.float64)
    inside = np.clip(boxes - shift, 0.0, np.array([w, h, w, h], np.float64))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible = (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
    keep = visible >= min_visible * area
    keep &= visible > 0
    return {
        **example,
        'image': image[y : y + h, x : x + w],
        'boxes': inside[keep].astype(np.float32),
        'labels': example['labels'][keep],
        'is_crowd': example['is_crowd'][keep],
        'content_size': np.asarray(win, np.int32),
    }


def clip_and_filter_boxes(example: dict, min_size: float = 1.0) -> dict:
    """Clips boxes to the image; drops crowd boxes and boxes under `min_size` pixels wide or
    tall. Crowd regions stay in the raw source for evaluation; they are never targets."""
    h, w = example['image'].shape[:2]
    boxes = np.clip(example['boxes'], 0.0, np.array([w, h, w, h], np.float32)[None])
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (wh[:, 0] >= min_size) & (wh[:, 1] >= min_size) & ~example['is_crowd']
    return {
        **example,
        'boxes': boxes[keep],
        'labels': example['labels'][keep],
        'is_crowd': example['is_crowd'][keep],
    }


def pad(example: dict, image_hw: tuple[int, int], max_boxes: int) -> dict:
    """Static shapes: uint8 image padded (bottom / right) with the mean colour PAD_VALUE to
    image_hw; ground truth to max_boxes rows, padding rows with box 0 and label -1. Boxes
    beyond max_boxes are cut and counted in 'num_boxes_truncated'. Output keys: image,
    gt_boxes, gt_labels, image_id, orig_size, scale, content_size, valid,
    num_boxes_truncated."""
    image = example['image']
    h, w = image.shape[:2]
    if h > image_hw[0] or w > image_hw[1]:
        raise UserError(f'pad: image {h}x{w} larger than the static image size {image_hw}')
    canvas = np.empty((*image_hw, 3), np.uint8)
    canvas[:h, :w] = image
    canvas[:h, w:] = PAD_VALUE
    canvas[h:] = PAD_VALUE
    n = len(example['labels'])
    keep = min(n, max_boxes)
    boxes = np.zeros((max_boxes, 4), np.float32)
    boxes[:keep] = example['boxes'][:keep]
    labels = np.full(max_boxes, -1, np.int32)
    labels[:keep] = example['labels'][:keep]
    return {
        'image': canvas,
        'gt_boxes': boxes,
        'gt_labels': labels,
        'image_id': np.int64(example['image_id']),
        'orig_size': np.asarray(example['orig_size'], np.int32),
        'scale': np.asarray(example['scale'], np.float32),
        'content_size': np.asarray(example['content_size'], np.int32),
        'valid': np.bool_(True),
        'num_boxes_truncated': np.int32(n - keep),
    }
