"""Post-processing with static shapes: head outputs -> a fixed number of detections per image.

  postprocess(cls_logits [B, R, K], box_deltas [B, R, 4], anchors [R, 4], image_sizes [B, 2],
              anchors_per_level, config) -> {
      'boxes':  float32 [B, D, 4] xyxy pixels of the network input, clipped to image_sizes
      'scores': float32 [B, D]    sigmoid class probability
      'labels': int32 [B, D]      contiguous class
      'valid':  bool [B, D]       False for empty slots
  }, best first. `anchors_per_level` (static) is the number of anchors of each pyramid level, in
  anchor order (see anchors.level_grid_sizes); `image_sizes` is the (h, w) of each image inside
  the padding. `boxes_to_original(boxes, scale)` maps boxes back to original image pixels.

As torchvision's RetinaNet.postprocess_detections: per level, the `topk_candidates` best
(anchor, class) scores above `score_threshold`; decode and clip them; class-aware NMS over all
levels; keep the `max_detections` best. Everything is jit- and vmap-compatible; no host round
trip and no recompilation across images of one static size. Sigmoid is monotonic, so top-k and
the threshold work on logits and only the chosen candidates pass through the sigmoid. The
threshold may also be given as a traced `logit_threshold` (a float32 scalar, `score_logit` of the
score), so that one compiled program serves every threshold.

NMS is nms.py's, as the primitive `nms_p` (so that an ONNX export maps it to ONNX's own).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from retinanet_jax.errors import UserError
from retinanet_jax.ops import boxes as box_lib
from retinanet_jax.ops import nms as nms_lib


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.05
    topk_candidates: int = 1000  # per level
    nms_iou_threshold: float = 0.5
    max_detections: int = 100  # COCO's evaluation uses 100
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def __post_init__(self):
        if not 0 <= self.score_threshold < 1:
            raise UserError(
                f'PostprocessConfig.score_threshold must be in [0, 1), got {self.score_threshold}'
            )
        if not 0 <= self.nms_iou_threshold <= 1:
            raise UserError(
                f'PostprocessConfig.nms_iou_threshold must be in [0, 1], '
                f'got {self.nms_iou_threshold}'
            )
        for name in ('topk_candidates', 'max_detections'):
            if getattr(self, name) < 1:
                raise UserError(f'PostprocessConfig.{name} must be >= 1, got {getattr(self, name)}')

    @classmethod
    def torchvision(cls) -> 'PostprocessConfig':
        """torchvision RetinaNet defaults: 300 detections per image."""
        return cls(max_detections=300)


def score_logit(p: float) -> float:
    """The logit of a score threshold p in [0, 1) (-inf for 0), computed in float64."""
    return -math.inf if p == 0 else math.log(p / (1.0 - p))


def postprocess_image(
    cls_logits: jax.Array,
    box_deltas: jax.Array,
    anchors: jax.Array,
    image_size: jax.Array,
    anchors_per_level: tuple[int, ...],
    config: PostprocessConfig = PostprocessConfig(),
    logit_threshold: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """One image: cls_logits [R, K], box_deltas [R, 4], anchors [R, 4], image_size [2];
    `logit_threshold` (a scalar) replaces config.score_threshold where given."""
    anchors = jnp.asarray(anchors)
    num_classes = cls_logits.shape[-1]
    threshold = score_logit(config.score_threshold) if logit_threshold is None else logit_threshold
    cand_logits, cand_anchor, cand_label = [], [], []
    start = 0
    for size in anchors_per_level:
        flat = cls_logits[start : start + size].reshape(-1).astype(jnp.float32)  # [n_l * K]
        k = min(config.topk_candidates, flat.shape[0])
        values, idx = jax.lax.top_k(flat, k)
        anchor = jax.lax.div(idx, num_classes)  # (not // and %: they do not export to ONNX)
        cand_logits.append(jnp.where(values > threshold, values, -jnp.inf))
        cand_anchor.append(start + anchor)
        cand_label.append(idx - anchor * num_classes)
        start += size
    if start != cls_logits.shape[0]:
        raise ValueError(  # our own inconsistency: a bug, with its traceback
            f'postprocess: anchors_per_level sum to {start}, but R = {cls_logits.shape[0]}'
        )
    logits = jnp.concatenate(cand_logits)
    anchor_idx = jnp.concatenate(cand_anchor)
    labels = jnp.concatenate(cand_label).astype(jnp.int32)
    boxes = box_lib.decode_boxes_xyxy(
        box_deltas[anchor_idx].astype(jnp.float32), anchors[anchor_idx], config.box_weights
    )
    boxes = box_lib.clip_boxes_xyxy(boxes, image_size)
    valid = jnp.isfinite(logits)
    keep, kept = nms_lib.batched_nms_op(
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
    anchors_per_level: tuple[int, ...],
    config: PostprocessConfig = PostprocessConfig(),
    logit_threshold: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Batched `postprocess_image` (vmap); see the module docstring."""

    def one(c, b, s):
        return postprocess_image(c, b, anchors, s, anchors_per_level, config, logit_threshold)

    return jax.vmap(one)(cls_logits, box_deltas, image_sizes)


def boxes_to_original(boxes: jax.Array, scale: jax.Array) -> jax.Array:
    """[..., D, 4] boxes of the resized image -> original pixels, with scale [..., 2] = (sy, sx)
    as recorded by the input pipeline (resized = original * scale)."""
    sy, sx = scale[..., 0:1, None], scale[..., 1:2, None]
    return boxes / jnp.concatenate([sx, sy, sx, sy], axis=-1)
