"""Box formats, IoU / GIoU and the (dx, dy, dw, dh) box coder. Pure jnp, no state.

Box formats (the format is in every function name):
  xyxy:   (x1, y1, x2, y2), absolute pixels, x2 >= x1 for a valid box. The default everywhere.
  xywh:   (x1, y1, width, height), as in COCO json.
  cxcywh: (centre x, centre y, width, height).
All functions take boxes as [..., 4] and broadcast over leading dimensions, with any number of
boxes (zero included).

Dtypes: format conversions keep the input's dtype, as torchvision's `box_convert` and
detectron2's `BoxMode.convert` do (integer boxes stay integer between xyxy and xywh; an integer
box's centre may fall on a half pixel, so cxcywh of integer boxes is float32). Everything else
(areas, IoU, clipping, the box coder) computes, and returns, float32, or float64 for float64
inputs: float16, bfloat16 and integer boxes are converted first (`as_float`), as torchvision's
`_upcast` does: in float16 the area of a 300-pixel box already overflows, and int16 products
wrap.

Box coding follows the R-CNN parametrisation used by every reference:
  dx = wx * (gx - ax) / aw,  dy = wy * (gy - ay) / ah,
  dw = ww * log(gw / aw),    dh = wh * log(gh / ah),
with (gx, gy, gw, gh) and (ax, ay, aw, ah) the cxcywh of the ground truth and the anchor.
The reference pytorch-retinanet divides targets by std (0.1, 0.1, 0.2, 0.2): that is
weights (10, 10, 5, 5). torchvision's RetinaNet uses weights (1, 1, 1, 1).
"""

import math

import jax
import jax.numpy as jnp

# torchvision's `bbox_xform_clip`: exp(dw) is capped so a decoded box is at most 1000/16 times
# its anchor.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)

# Smallest width / height used when encoding, so that a degenerate ground-truth box gives a large
# but finite target instead of log(0) = -inf.
_MIN_ENCODE_SIZE = 1e-6


def as_float(boxes) -> jax.Array:
    """`boxes` as float32 (float64 stays float64): the dtype every function here computes in."""
    boxes = jnp.asarray(boxes)
    if boxes.dtype == jnp.float64:
        return boxes
    return boxes.astype(jnp.float32)


def _with_centres(boxes) -> jax.Array:
    """`boxes` in a dtype that holds half pixels: floating dtypes kept, integers as float32."""
    boxes = jnp.asarray(boxes)
    return boxes if jnp.issubdtype(boxes.dtype, jnp.floating) else boxes.astype(jnp.float32)


def box_xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
    """[..., 4] xyxy -> [..., 4] cxcywh (floating dtypes kept; integer boxes -> float32)."""
    x1, y1, x2, y2 = jnp.unstack(_with_centres(boxes), axis=-1)
    w, h = x2 - x1, y2 - y1
    return jnp.stack([x1 + 0.5 * w, y1 + 0.5 * h, w, h], axis=-1)


def box_cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
    """[..., 4] cxcywh -> [..., 4] xyxy (floating dtypes kept; integer boxes -> float32)."""
    cx, cy, w, h = jnp.unstack(_with_centres(boxes), axis=-1)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def box_xyxy_to_xywh(boxes: jax.Array) -> jax.Array:
    """[..., 4] xyxy -> [..., 4] xywh (COCO json), in the input's dtype."""
    x1, y1, x2, y2 = jnp.unstack(jnp.asarray(boxes), axis=-1)
    return jnp.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


def box_xywh_to_xyxy(boxes: jax.Array) -> jax.Array:
    """[..., 4] xywh (COCO json) -> [..., 4] xyxy, in the input's dtype."""
    x1, y1, w, h = jnp.unstack(jnp.asarray(boxes), axis=-1)
    return jnp.stack([x1, y1, x1 + w, y1 + h], axis=-1)


def box_area_xyxy(boxes: jax.Array) -> jax.Array:
    """[..., 4] xyxy -> [...] area; boxes with negative extent have area 0."""
    x1, y1, x2, y2 = jnp.unstack(as_float(boxes), axis=-1)
    return jnp.maximum(x2 - x1, 0.0) * jnp.maximum(y2 - y1, 0.0)


def clip_boxes_xyxy(boxes: jax.Array, image_hw: jax.Array | tuple[float, float]) -> jax.Array:
    """Clips [..., 4] xyxy boxes to [0, width] x [0, height]; image_hw broadcasts as [..., 2]."""
    boxes = as_float(boxes)
    image_hw = jnp.asarray(image_hw, boxes.dtype)
    h, w = image_hw[..., 0:1], image_hw[..., 1:2]
    x1, y1, x2, y2 = jnp.split(boxes, 4, axis=-1)
    return jnp.concatenate(
        [jnp.clip(x1, 0, w), jnp.clip(y1, 0, h), jnp.clip(x2, 0, w), jnp.clip(y2, 0, h)], axis=-1
    )


def _intersection_union(boxes1: jax.Array, boxes2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Intersection and union areas of broadcastable [..., 4] xyxy boxes -> ([...], [...])."""
    ax1, ay1, ax2, ay2 = jnp.unstack(as_float(boxes1), axis=-1)
    bx1, by1, bx2, by2 = jnp.unstack(as_float(boxes2), axis=-1)
    iw = jnp.maximum(jnp.minimum(ax2, bx2) - jnp.maximum(ax1, bx1), 0.0)
    ih = jnp.maximum(jnp.minimum(ay2, by2) - jnp.maximum(ay1, by1), 0.0)
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter, union


def _enclosing_area(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    ax1, ay1, ax2, ay2 = jnp.unstack(as_float(boxes1), axis=-1)
    bx1, by1, bx2, by2 = jnp.unstack(as_float(boxes2), axis=-1)
    return (jnp.maximum(ax2, bx2) - jnp.minimum(ax1, bx1)) * (
        jnp.maximum(ay2, by2) - jnp.minimum(ay1, by1)
    )


def box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise IoU, as torchvision.ops.box_iou.

    Args:
      boxes1: [..., N, 4] xyxy.
      boxes2: [..., M, 4] xyxy.

    Returns:
      [..., N, M] IoU in [0, 1]. A pair whose union is empty (two degenerate boxes) has IoU 0.
    """
    boxes1, boxes2 = jnp.asarray(boxes1), jnp.asarray(boxes2)
    inter, union = _intersection_union(boxes1[..., :, None, :], boxes2[..., None, :, :])
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def generalized_box_iou(boxes1: jax.Array, boxes2: jax.Array, eps: float = 1e-7) -> jax.Array:
    """Element-wise GIoU of broadcastable [..., 4] xyxy boxes -> [...], in [-1, 1].

    Same formula and eps placement as torchvision.ops.generalized_box_iou_loss, so that
    `1 - generalized_box_iou(a, b)` is that loss. For pairwise GIoU pass
    `boxes1[:, None]` and `boxes2[None]`.
    """
    inter, union = _intersection_union(boxes1, boxes2)
    iou = inter / (union + eps)
    enclosing = _enclosing_area(boxes1, boxes2)
    return iou - (enclosing - union) / (enclosing + eps)


def encode_boxes_xyxy(
    boxes: jax.Array,
    anchors: jax.Array,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    min_size: float = 0.0,
) -> jax.Array:
    """Encodes ground-truth boxes relative to anchors.

    Args:
      boxes: [..., 4] xyxy ground truth.
      anchors: [..., 4] xyxy anchors, broadcastable against `boxes`.
      weights: (wx, wy, ww, wh) multipliers of the deltas.
      min_size: ground-truth width and height are clamped to at least this *after* the centre is
        computed (pytorch-retinanet uses 1 pixel; torchvision 0). A tiny positive floor always
        applies so that degenerate boxes give finite targets.

    Returns:
      [..., 4] deltas (dx, dy, dw, dh).
    """
    gx, gy, gw, gh = jnp.unstack(box_xyxy_to_cxcywh(as_float(boxes)), axis=-1)
    ax, ay, aw, ah = jnp.unstack(box_xyxy_to_cxcywh(as_float(anchors)), axis=-1)
    floor = max(min_size, _MIN_ENCODE_SIZE)
    gw, gh = jnp.maximum(gw, floor), jnp.maximum(gh, floor)
    wx, wy, ww, wh = weights
    return jnp.stack(
        [
            wx * (gx - ax) / aw,
            wy * (gy - ay) / ah,
            ww * jnp.log(gw / aw),
            wh * jnp.log(gh / ah),
        ],
        axis=-1,
    )


def decode_boxes_xyxy(
    deltas: jax.Array,
    anchors: jax.Array,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    scale_clamp: float = DEFAULT_SCALE_CLAMP,
) -> jax.Array:
    """Inverse of `encode_boxes_xyxy`, as torchvision's BoxCoder.decode_single.

    Args:
      deltas: [..., 4] (dx, dy, dw, dh).
      anchors: [..., 4] xyxy, broadcastable against `deltas`.
      weights: (wx, wy, ww, wh) the deltas were encoded with.
      scale_clamp: dw / dh are clamped to at most this before exp (log(1000/16) by default).

    Returns:
      [..., 4] xyxy boxes.
    """
    deltas = as_float(deltas)
    ax, ay, aw, ah = jnp.unstack(box_xyxy_to_cxcywh(jnp.asarray(anchors, deltas.dtype)), axis=-1)
    dx, dy, dw, dh = jnp.unstack(deltas, axis=-1)
    wx, wy, ww, wh = weights
    dx, dy = dx / wx, dy / wy
    dw = jnp.minimum(dw / ww, scale_clamp)
    dh = jnp.minimum(dh / wh, scale_clamp)
    cx, cy = dx * aw + ax, dy * ah + ay
    w, h = jnp.exp(dw) * aw, jnp.exp(dh) * ah
    return box_cxcywh_to_xyxy(jnp.stack([cx, cy, w, h], axis=-1))
