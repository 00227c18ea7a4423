"""IoU matching of anchors to ground truth, with static shapes.

Per image:
  anchors   [R, 4] xyxy pixels
  gt_boxes  [M, 4] xyxy pixels, padded to a static M
  gt_valid  [M] bool; False marks a padding row (label -1 upstream)
Returns
  matched_idx [R] int32 in [0, M): the ground truth each anchor is assigned to (its IoU argmax;
              meaningful only where the label is POSITIVE)
  labels      [R] int32: POSITIVE (1), NEGATIVE (0) or IGNORE (-1)

Rules (RetinaNet, sec. 4 of the paper): an anchor whose best IoU is >= positive_threshold (0.5)
is positive, < negative_threshold (0.4) negative, in between ignored. With low-quality matches
(torchvision / detectron2 / the original Detectron), each ground truth's best anchor(s), ties
included, also become positive, assigned to *their own* IoU-argmax ground truth, exactly as
torchvision's `Matcher.set_low_quality_matches_`, except that IoUs within TIE_ULPS float32
steps of the best are ties (torchvision compares exactly; the same IoU computed for
different padding sizes differs in the last bit, and padding must not change the matches).

Padding rows get IoU -1 before any maximum, so they never match, not even in the low-quality
step. One deliberate departure from torchvision: a ground truth that overlaps no anchor at all
(best IoU 0, e.g. a zero-area box) adds no low-quality matches; torchvision would make every
anchor with IoU 0 to it positive. Images with no valid ground truth are all NEGATIVE.
"""

import dataclasses

import jax
import jax.numpy as jnp

from retinanet_jax.errors import UserError
from retinanet_jax.ops import boxes as box_lib

POSITIVE = 1
NEGATIVE = 0
IGNORE = -1
TIE_ULPS = 4  # low-quality matches: IoUs this close to a ground truth's best are ties


@dataclasses.dataclass(frozen=True)
class MatcherConfig:
    positive_threshold: float = 0.5
    negative_threshold: float = 0.4
    low_quality_matches: bool = True

    def __post_init__(self):
        if self.negative_threshold > self.positive_threshold:
            raise UserError(
                f'MatcherConfig.negative_threshold ({self.negative_threshold}) must be <= '
                f'positive_threshold ({self.positive_threshold})'
            )


def match_iou(
    iou: jax.Array, gt_valid: jax.Array, config: MatcherConfig = MatcherConfig()
) -> tuple[jax.Array, jax.Array]:
    """Matches from a precomputed IoU matrix.

    Args:
      iou: [R, M] IoU of each anchor (row) with each ground truth (column).
      gt_valid: [M] bool, False for padding rows.
      config: thresholds and low-quality setting.

    Returns:
      (matched_idx [R] int32, labels [R] int32 in {POSITIVE, NEGATIVE, IGNORE}).
    """
    num_anchors, num_gt = iou.shape
    if num_gt == 0:
        zeros = jnp.zeros((num_anchors,), jnp.int32)
        return zeros, zeros + NEGATIVE
    iou = jnp.where(gt_valid[None, :], iou, -1.0)  # [R, M]
    best_iou = jnp.max(iou, axis=1)  # [R]
    # argmax, first index on ties, written as max + min: XLA:CPU's variadic argmax reduction is
    # about twice as slow as the two plain ones. The clamp only matters for NaN rows.
    columns = jnp.arange(num_gt, dtype=jnp.int32)[None, :]
    first_best = jnp.where(iou == best_iou[:, None], columns, num_gt)
    matched_idx = jnp.minimum(jnp.min(first_best, axis=1), num_gt - 1)  # [R]
    labels = jnp.where(
        best_iou >= config.positive_threshold,
        POSITIVE,
        jnp.where(best_iou < config.negative_threshold, NEGATIVE, IGNORE),
    )
    if config.low_quality_matches:
        best_per_gt = jnp.max(iou, axis=0)  # [M]
        eligible = gt_valid & (best_per_gt > 0)  # [M]
        # Ties within TIE_ULPS float32 steps of the best count as ties: equal IoUs (anchors of
        # one size that all contain a small box) come out of XLA up to a step apart depending
        # on how the [R, M] computation was vectorised, i.e. on M (the padding).
        floor = best_per_gt * (1.0 - TIE_ULPS * float(jnp.finfo(jnp.float32).eps))
        is_best = (iou >= floor[None, :]) & eligible[None, :]  # [R, M]
        labels = jnp.where(jnp.any(is_best, axis=1), POSITIVE, labels)
    return matched_idx, labels.astype(jnp.int32)


def match_anchors(
    anchors: jax.Array,
    gt_boxes: jax.Array,
    gt_valid: jax.Array,
    config: MatcherConfig = MatcherConfig(),
) -> tuple[jax.Array, jax.Array]:
    """Matches one image's anchors [R, 4] to its ground truth [M, 4]; see `match_iou`."""
    return match_iou(box_lib.box_iou(anchors, gt_boxes), gt_valid, config)
