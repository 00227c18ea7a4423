"""Post-processing with static shapes: head outputs -> a fixed number of detections per image.

  postprocess(cls_logits [B, R, K], box_deltas [B, R, 4], anchors [R, 4], image_sizes [B, 2],
              level_sizes, config) -> {
      'boxes':  float32 [B, D, 4] xyxy pixels of the network input, clipped to image_sizes
      'scores': float32 [B, D]    sigmoid class probability
      'labels': int32 [B, D]      contiguous class
      'valid':  bool [B, D]       False for empty slots
  }, best first. `level_sizes` (static) is the number of anchors of each pyramid level, in
  anchor order (see anchors.level_grid_sizes); `image_sizes` is the (h, w) of each image inside
  the padding. `boxes_to_original(boxes, scale)` maps boxes back to original image pixels.

As torchvision's RetinaNet.postprocess_detections: per level, the `topk_candidates` best
(anchor, class) scores above `score_threshold`; decode and clip them; class-aware NMS over all
levels; keep the `max_detections` best. Everything is jit- and vmap-compatible; no host round
trip and no recompilation across images of one static size. Sigmoid is monotonic, so top-k and
the threshold work on logits and only the chosen candidates pass through the sigmoid.

`nms` / `batched_nms` return fixed-size indices plus a validity mask; among equal scores the
lower index wins.
"""

import dataclasses
import math

import jax
import jax.extend
import jax.numpy as jnp
from jax.interpreters import batching, mlir

from retinanet_jax import boxes as box_lib


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.05
    topk_candidates: int = 1000  # per level
    nms_iou_threshold: float = 0.5
    max_detections: int = 100  # COCO's evaluation uses 100
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def __post_init__(self):
        if not 0 <= self.score_threshold < 1:
            raise ValueError(
                f'PostprocessConfig.score_threshold must be in [0, 1), got {self.score_threshold}'
            )
        if not 0 <= self.nms_iou_threshold <= 1:
            raise ValueError(
                f'PostprocessConfig.nms_iou_threshold must be in [0, 1], '
                f'got {self.nms_iou_threshold}'
            )
        for name in ('topk_candidates', 'max_detections'):
            if getattr(self, name) < 1:
                raise ValueError(
                    f'PostprocessConfig.{name} must be >= 1, got {getattr(self, name)}'
                )

    @classmethod
    def torchvision(cls) -> 'PostprocessConfig':
        """torchvision RetinaNet defaults: 300 detections per image."""
        return cls(max_detections=300)


def nms(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: float,
    max_output: int,
    valid: jax.Array | None = None,
    labels: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy non-maximum suppression with static shapes (labels given: class-aware).

    Args:
      boxes: [N, 4] xyxy (any dtype: IoU is computed in float32 or wider). N may be 0.
      scores: [N]. valid: optional [N] bool; invalid boxes are never kept.
      labels: optional [N] int; a box only suppresses boxes of its own label.
      iou_threshold: a box is suppressed by a kept box of IoU > iou_threshold.
      max_output: how many indices to return.

    Returns:
      (indices [max_output] int32, kept: [max_output] bool), best score first; slots beyond the
      number of kept boxes have kept=False (and index 0).
    """
    boxes, scores = box_lib.as_float(boxes), box_lib.as_float(scores)
    labels = None if labels is None else jnp.asarray(labels)
    n = boxes.shape[0]
    if n == 0:  # nothing to keep (argmax of nothing is undefined)
        return jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), bool)
    alive = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid)
    ranked = jnp.where(alive, scores, -jnp.inf)

    def step(i, carry):
        ranked, indices, kept = carry
        best = jnp.argmax(ranked)  # first index among equal scores
        ok = ranked[best] > -jnp.inf
        iou = box_lib.box_iou(boxes[best][None], boxes)[0]
        suppress = iou > iou_threshold
        if labels is not None:
            suppress &= labels == labels[best]
        suppress |= jnp.arange(n) == best
        ranked = jnp.where(ok & suppress, -jnp.inf, ranked)
        return ranked, indices.at[i].set(jnp.where(ok, best, 0)), kept.at[i].set(ok)

    init = (ranked, jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), bool))
    _, indices, kept = jax.lax.fori_loop(0, max_output, step, init)
    return indices, kept


def batched_nms(
    boxes: jax.Array,
    scores: jax.Array,
    labels: jax.Array,
    iou_threshold: float,
    max_output: int,
    valid: jax.Array | None = None,
    num_classes: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Class-aware NMS: boxes of different labels never suppress each other. (Exact, unlike
    torchvision's coordinate-offset trick, which loses float32 precision far from the origin.)

    boxes [..., N, 4] xyxy, scores [..., N], labels [..., N] int in [0, num_classes), valid
    [..., N] -> (indices [..., max_output] int32, kept [..., max_output] bool), as `nms`. With
    `num_classes` given it runs as the primitive `nms_p` (the same greedy NMS in JAX; ONNX's
    NonMaxSuppression in an ONNX export, see deploy.py)."""
    if num_classes is None:
        return nms(boxes, scores, iou_threshold, max_output, valid, labels)
    scores = jnp.asarray(scores, jnp.float32)
    if valid is not None:
        scores = jnp.where(valid, scores, -jnp.inf)
    return tuple(
        nms_p.bind(
            jnp.asarray(boxes, jnp.float32),
            scores,
            jnp.asarray(labels, jnp.int32),
            iou_threshold=float(iou_threshold),
            max_output=int(max_output),
            num_classes=int(num_classes),
        )
    )


# The class-aware greedy NMS as one primitive, so that exporters can map it to their own NMS
# operator (deploy.py: ONNX NonMaxSuppression). In JAX it is `nms` (any number of leading batch
# dimensions, vmap-able, lowered for jit and jax.export). Scores of -inf are not candidates.
nms_p = jax.extend.core.Primitive('retinanet_nms')
nms_p.multiple_results = True


def _nms_p_impl(boxes, scores, labels, *, iou_threshold, max_output, num_classes):
    del num_classes

    def one(b, s, lab):
        return nms(b, s, iou_threshold, max_output, valid=jnp.isfinite(s), labels=lab)

    for _ in range(boxes.ndim - 2):
        one = jax.vmap(one)
    return one(boxes, scores, labels)


def _nms_p_abstract(boxes, scores, labels, *, max_output, **_):
    lead = boxes.shape[:-2]
    return (
        jax.core.ShapedArray((*lead, max_output), jnp.int32),
        jax.core.ShapedArray((*lead, max_output), jnp.bool_),
    )


def _nms_p_batch(args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    args = [batching.bdim_at_front(a, d, size) for a, d in zip(args, dims, strict=True)]
    return nms_p.bind(*args, **params), (0, 0)


nms_p.def_impl(_nms_p_impl)
nms_p.def_abstract_eval(_nms_p_abstract)
mlir.register_lowering(nms_p, mlir.lower_fun(_nms_p_impl, multiple_results=True))
batching.primitive_batchers[nms_p] = _nms_p_batch


def _logit(p: float) -> float:
    return -math.inf if p == 0 else math.log(p / (1.0 - p))


def postprocess_image(
    cls_logits: jax.Array,
    box_deltas: jax.Array,
    anchors: jax.Array,
    image_size: jax.Array,
    level_sizes: tuple[int, ...],
    config: PostprocessConfig = PostprocessConfig(),
) -> dict[str, jax.Array]:
    """One image: cls_logits [R, K], box_deltas [R, 4], anchors [R, 4], image_size [2]."""
    anchors = jnp.asarray(anchors)
    num_classes = cls_logits.shape[-1]
    threshold = _logit(config.score_threshold)
    cand_logits, cand_anchor, cand_label = [], [], []
    start = 0
    for size in level_sizes:
        flat = cls_logits[start : start + size].reshape(-1).astype(jnp.float32)  # [n_l * K]
        k = min(config.topk_candidates, flat.shape[0])
        values, idx = jax.lax.top_k(flat, k)
        anchor = jax.lax.div(idx, num_classes)  # (not // and %: they do not export to ONNX)
        cand_logits.append(jnp.where(values > threshold, values, -jnp.inf))
        cand_anchor.append(start + anchor)
        cand_label.append(idx - anchor * num_classes)
        start += size
    if start != cls_logits.shape[0]:
        raise ValueError(f'postprocess: level_sizes sum to {start}, but R = {cls_logits.shape[0]}')
    logits = jnp.concatenate(cand_logits)
    anchor_idx = jnp.concatenate(cand_anchor)
    labels = jnp.concatenate(cand_label).astype(jnp.int32)
    boxes = box_lib.decode_boxes_xyxy(
        box_deltas[anchor_idx].astype(jnp.float32), anchors[anchor_idx], config.box_weights
    )
    boxes = box_lib.clip_boxes_xyxy(boxes, image_size)
    valid = jnp.isfinite(logits)
    keep, kept = batched_nms(
        boxes, logits, labels, config.nms_iou_threshold, config.max_detections, valid, num_classes
    )
    return {
        'boxes': jnp.where(kept[:, None], boxes[keep], 0.0),
        'scores': jnp.where(kept, jax.nn.sigmoid(logits[keep]), 0.0),
        'labels': jnp.where(kept, labels[keep], -1),
        'valid': kept,
    }


def postprocess(
    cls_logits: jax.Array,
    box_deltas: jax.Array,
    anchors: jax.Array,
    image_sizes: jax.Array,
    level_sizes: tuple[int, ...],
    config: PostprocessConfig = PostprocessConfig(),
) -> dict[str, jax.Array]:
    """Batched `postprocess_image` (vmap); see the module docstring."""
    return jax.vmap(lambda c, b, s: postprocess_image(c, b, anchors, s, level_sizes, config))(
        cls_logits, box_deltas, image_sizes
    )


def boxes_to_original(boxes: jax.Array, scale: jax.Array) -> jax.Array:
    """[..., D, 4] boxes of the resized image -> original pixels, with scale [..., 2] = (sy, sx)
    as recorded by the input pipeline (resized = original * scale)."""
    sy, sx = scale[..., 0:1, None], scale[..., 1:2, None]
    return boxes / jnp.concatenate([sx, sy, sx, sy], axis=-1)
