"""RetinaNet losses: sigmoid focal loss, box losses and the full `detection_loss`.

`detection_loss` is jit-compiled and takes:
  cls_logits  [B, R, K] float   raw class logits (no sigmoid), K classes without background
  box_deltas  [B, R, 4] float   predicted (dx, dy, dw, dh), encoded with `config.box_weights`
  anchors     [R, 4]    float   xyxy pixels, from `anchors.generate_anchors` (same row order)
  gt_boxes    [B, M, 4] float   xyxy pixels, padded to a static M
  gt_labels   [B, M]    int     class in [0, K); -1 marks a padding row
and returns (loss, aux) with loss = cls_loss + box_loss_weight * box_loss, and aux holding the
scalars 'cls_loss', 'box_loss', 'num_positives' (positive anchors in the batch) and 'normalizer'.
Anchors are matched to ground truth by `matching.match_anchors`; ignored anchors (IoU in the
[0.4, 0.5) band) contribute to neither term. Losses are computed in float32 whatever the dtype
of the head outputs.

Every convention on which the references differ is a `LossConfig` field, with named presets:
  LossConfig.paper()              the default; see its docstring
  LossConfig.torchvision()        torchvision retinanet_resnet50_fpn `compute_loss`
  LossConfig.torchvision_v2()     torchvision retinanet_resnet50_fpn_v2 (GIoU box loss)
  LossConfig.pytorch_retinanet()  the reference FocalLoss of pytorch-retinanet (design documents)
"""

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from retinanet_jax.errors import UserError
from retinanet_jax.ops import boxes as box_lib
from retinanet_jax.ops import matching


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss settings. Defaults are the paper's recipe (`LossConfig.paper()`)."""

    alpha: float = 0.25  # Focal-loss weight of positives; negatives get 1 - alpha. < 0: no alpha.
    gamma: float = 2.0
    box_loss: Literal['smooth_l1', 'l1', 'giou'] = 'smooth_l1'
    smooth_l1_beta: float = 0.11
    # Multipliers of (dx, dy, dw, dh); the reference's std (0.1, 0.1, 0.2, 0.2) is (10, 10, 5, 5).
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    # Ground-truth width / height floor when encoding targets (the reference clamps to 1 pixel).
    box_min_size: float = 0.0
    box_loss_weight: float = 1.0
    # 'batch': both terms summed over the batch and divided by the batch's positive count.
    # 'per_image': each image divided by its own positive count, then averaged over images.
    normalizer: Literal['batch', 'per_image'] = 'batch'
    # Divide the box term by 4 as well (the reference's `regression_loss.mean()`).
    average_box_coordinates: bool = False
    matcher: matching.MatcherConfig = dataclasses.field(default_factory=matching.MatcherConfig)

    def __post_init__(self):
        if self.box_loss not in ('smooth_l1', 'l1', 'giou'):
            raise UserError(
                f"LossConfig.box_loss must be 'smooth_l1', 'l1' or 'giou', got {self.box_loss!r}"
            )
        if self.normalizer not in ('batch', 'per_image'):
            raise UserError(
                f"LossConfig.normalizer must be 'batch' or 'per_image', got {self.normalizer!r}"
            )
        if self.gamma < 0:
            raise UserError(f'LossConfig.gamma must be >= 0, got {self.gamma}')
        if self.box_loss == 'smooth_l1' and self.smooth_l1_beta < 0:
            raise UserError(f'LossConfig.smooth_l1_beta must be >= 0, got {self.smooth_l1_beta}')
        if len(self.box_weights) != 4 or min(self.box_weights) <= 0:
            raise UserError(
                f'LossConfig.box_weights must be 4 positive numbers: {self.box_weights}'
            )

    @classmethod
    def paper(cls) -> 'LossConfig':
        """The paper's recipe, as trained by its authors' Detectron code.

        - matching 0.5 / 0.4 plus low-quality matches (Detectron gives every ground truth its
          best anchors, ties included, so small objects always get a positive);
        - the loss normalised by the number of positive anchors in the whole batch (sec. 3.3:
          "normalized by the number of anchors assigned to a ground-truth box"), which weighs
          every object equally instead of over-weighting images with few positives;
        - smooth-L1 box loss with beta 0.11 and unit delta weights (Detectron's RetinaNet).
        """
        return cls()

    @classmethod
    def torchvision(cls) -> 'LossConfig':
        """torchvision `RetinaNet.compute_loss` (v1): per-image normaliser, L1 box loss."""
        return cls(box_loss='l1', normalizer='per_image')

    @classmethod
    def torchvision_v2(cls) -> 'LossConfig':
        """torchvision `retinanet_resnet50_fpn_v2`: as v1 but with a GIoU box loss."""
        return cls(box_loss='giou', normalizer='per_image')

    @classmethod
    def pytorch_retinanet(cls) -> 'LossConfig':
        """The reference pytorch-retinanet FocalLoss (see shared/reference/).

        No low-quality matches; targets divided by std (0.1, 0.1, 0.2, 0.2); gt sizes clamped to
        1 pixel; smooth-L1 with beta 1/9 averaged over positives x 4 coordinates; per-image
        normalisation. The reference clamps probabilities to [1e-4, 1 - 1e-4]; we do not, so the
        two agree exactly for logits within about +-9.2.
        """
        return cls(
            box_loss='smooth_l1',
            smooth_l1_beta=1.0 / 9.0,
            box_weights=(10.0, 10.0, 5.0, 5.0),
            box_min_size=1.0,
            normalizer='per_image',
            average_box_coordinates=True,
            matcher=matching.MatcherConfig(low_quality_matches=False),
        )


def sigmoid_focal_loss(
    logits: jax.Array, targets: jax.Array, alpha: float = 0.25, gamma: float = 2.0
) -> jax.Array:
    """Element-wise sigmoid focal loss, -alpha_t (1 - p_t)^gamma log(p_t), from logits.

    Numerically stable for any logit: with s = -x for positives and x for negatives,
    1 - p_t = sigmoid(s) and -log(p_t) = softplus(s), both computed from one exp(-|s|).

    Args:
      logits: [...] raw scores.
      targets: [...] binary targets (bool or {0, 1}); same shape as `logits`. Not differentiated.
      alpha: weight of positives (negatives get 1 - alpha); a negative value disables it.
      gamma: focusing parameter, >= 0.

    Returns:
      [...] float32 loss, unreduced.
    """
    x = logits.astype(jnp.float32)
    return _focal(x, targets.astype(bool), jnp.ones((), bool), float(alpha), float(gamma))


def _focal_value_and_grad(x, positive, valid, alpha, gamma):
    """Loss and d loss / d logit, element-wise, zero where not `valid`, in one pass."""
    s = jnp.where(positive, -x, x)
    e = jnp.exp(-jnp.abs(s))
    u = 1.0 + e
    # log1p(e) written with log alone (Goldberg's exact rewrite): XLA:CPU emits log1p as a
    # separate, unfusable call, which would cost one more pass over [B, R, K].
    log1p_e = jnp.where(u == 1.0, e, jnp.log(u) * e / (u - 1.0))
    softplus = jnp.maximum(s, 0.0) + log1p_e  # -log p_t
    q = jnp.where(s >= 0, 1.0, e) / u  # 1 - p_t = sigmoid(s)
    weight = jnp.where(positive, alpha, 1.0 - alpha) if alpha >= 0 else 1.0
    weight = jnp.where(valid, weight, 0.0)
    q_gamma = weight * q**gamma if gamma != 0 else weight * jnp.ones_like(q)
    # d/ds [q^gamma softplus] = q^gamma (gamma (1 - q) softplus + q), as dq/ds = q (1 - q).
    dloss_ds = q_gamma * (gamma * (1.0 - q) * softplus + q)
    grad = jnp.where(positive, -dloss_ds, dloss_ds)
    # One two-output fusion: left to itself, XLA:CPU (jax 0.10) splits this chain into many
    # materialised passes around a YNNPACK reduction, which is 3-4x slower (bench/loss.py).
    return jax.lax.optimization_barrier((q_gamma * softplus, grad))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _focal(x, positive, valid, alpha, gamma):
    return _focal_value_and_grad(x, positive, valid, alpha, gamma)[0]


def _focal_fwd(x, positive, valid, alpha, gamma):
    return _focal_value_and_grad(x, positive, valid, alpha, gamma)


def _focal_bwd(alpha, gamma, grad, cotangent):
    del alpha, gamma
    return cotangent * grad, None, None


_focal.defvjp(_focal_fwd, _focal_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _focal_sum(x, positive, valid, alpha, gamma):
    """Sum of the masked focal loss over all elements (a float32 scalar)."""
    loss = _focal_value_and_grad(x, positive, valid, alpha, gamma)[0]
    # An add that XLA:CPU's YNNPACK fusion does not recognise (loss >= 0, so max(a, -1) = a):
    # with a plain sum it pulls the whole element-wise chain apart and runs 3-4x slower.
    return jax.lax.reduce(loss, np.float32(0), lambda a, b: jnp.maximum(a, -1.0) + b, range(x.ndim))


def _focal_sum_fwd(x, positive, valid, alpha, gamma):
    loss, grad = _focal_value_and_grad(x, positive, valid, alpha, gamma)
    return jnp.sum(loss), grad


_focal_sum.defvjp(_focal_sum_fwd, _focal_bwd)


def smooth_l1_loss(pred: jax.Array, target: jax.Array, beta: float) -> jax.Array:
    """Element-wise smooth-L1 (Huber / beta), as torch.nn.functional.smooth_l1_loss."""
    diff = jnp.abs(pred - target)
    if beta == 0:
        return diff
    return jnp.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def box_regression_loss(
    box_deltas: jax.Array, anchors: jax.Array, target_boxes: jax.Array, config: LossConfig
) -> jax.Array:
    """Per-anchor box loss, summed over the 4 coordinates.

    Args:
      box_deltas: [..., 4] predicted deltas.
      anchors: [..., 4] xyxy anchors.
      target_boxes: [..., 4] xyxy matched ground truth.
      config: selects smooth-L1 / L1 on encoded deltas, or GIoU on decoded boxes.

    Returns:
      [...] float32 loss per anchor.
    """
    box_deltas = box_deltas.astype(jnp.float32)
    if config.box_loss == 'giou':
        pred_boxes = box_lib.decode_boxes_xyxy(box_deltas, anchors, config.box_weights)
        return 1.0 - box_lib.generalized_box_iou(pred_boxes, target_boxes)
    targets = box_lib.encode_boxes_xyxy(
        target_boxes, anchors, config.box_weights, config.box_min_size
    )
    if config.box_loss == 'l1':
        per_coord = jnp.abs(box_deltas - targets)
    else:
        per_coord = smooth_l1_loss(box_deltas, targets, config.smooth_l1_beta)
    return jnp.sum(per_coord, axis=-1)


def per_image_loss_terms(
    cls_logits: jax.Array,
    box_deltas: jax.Array,
    anchors: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    config: LossConfig = LossConfig(),
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Unnormalised loss sums of one image.

    Args:
      cls_logits: [R, K]; box_deltas: [R, 4]; anchors: [R, 4] xyxy;
      gt_boxes: [M, 4] xyxy; gt_labels: [M] int, -1 = padding.

    Returns:
      (cls_sum, box_sum, num_positives): float32 scalars. cls_sum is the focal loss summed over
      all non-ignored anchors and classes; box_sum the box loss summed over positive anchors.
    """
    num_classes = cls_logits.shape[-1]
    gt_valid = gt_labels >= 0
    matched_idx, match_labels = matching.match_anchors(anchors, gt_boxes, gt_valid, config.matcher)
    positive = match_labels == matching.POSITIVE  # [R]
    not_ignored = match_labels != matching.IGNORE  # [R]

    anchor_class = jnp.where(positive, gt_labels[matched_idx], -1)  # [R]
    targets = anchor_class[:, None] == jnp.arange(num_classes)[None, :]  # [R, K]
    cls_sum = _focal_sum(
        cls_logits.astype(jnp.float32), targets, not_ignored[:, None], config.alpha, config.gamma
    )

    # Non-positive anchors regress onto themselves, so padding and far-away boxes never put an
    # inf or NaN into the (masked) branch, where it would poison the gradient.
    target_boxes = jnp.where(positive[:, None], gt_boxes[matched_idx], anchors)
    box = box_regression_loss(box_deltas, anchors, target_boxes.astype(jnp.float32), config)
    box_sum = jnp.sum(jnp.where(positive, box, 0.0))
    return cls_sum, box_sum, jnp.sum(positive).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('config', 'axis_name'))
def detection_loss(
    cls_logits: jax.Array,
    box_deltas: jax.Array,
    anchors: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    config: LossConfig = LossConfig(),
    axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """RetinaNet loss of a batch; see the module docstring for shapes and formats.

    Args:
      cls_logits: [B, R, K] class logits.
      box_deltas: [B, R, 4] box deltas.
      anchors: [R, 4] xyxy pixels.
      gt_boxes: [B, M, 4] xyxy pixels, padded.
      gt_labels: [B, M] int labels in [0, K), -1 for padding rows.
      config: a hashable `LossConfig` (static).
      axis_name: with the 'batch' normaliser inside `shard_map` / `pmap`, the mapped axis over
        which positives are summed, so every shard divides by the global count (and the
        per-shard losses add up to the global loss). Not needed under plain `jax.jit` with
        sharded arrays, where the batch sums are already global.

    Returns:
      (loss, aux): float32 scalar loss and a dict of float32 scalars 'cls_loss', 'box_loss',
      'num_positives' and 'normalizer'.
    """
    _check_inputs(cls_logits, box_deltas, anchors, gt_boxes, gt_labels)
    if gt_boxes.shape[1] == 0:  # no ground-truth slots at all: one padding row, all negative
        gt_boxes = jnp.zeros((gt_boxes.shape[0], 1, 4), jnp.float32)
        gt_labels = jnp.full((gt_labels.shape[0], 1), -1, jnp.int32)
    terms = functools.partial(per_image_loss_terms, anchors=anchors, config=config)
    cls_sum, box_sum, num_pos = jax.vmap(
        lambda c, b, g, lab: terms(c, b, gt_boxes=g, gt_labels=lab)
    )(cls_logits, box_deltas, gt_boxes, gt_labels)  # each [B]

    loss, cls_loss, box_loss, normalizer = normalised_loss(
        cls_sum, box_sum, num_pos, config, axis_name
    )
    aux = {
        'cls_loss': cls_loss,
        'box_loss': box_loss,
        'num_positives': jnp.sum(num_pos),
        'normalizer': normalizer,
    }
    return loss, aux


def normalised_loss(
    cls_sum: jax.Array,
    box_sum: jax.Array,
    num_pos: jax.Array,
    config: LossConfig = LossConfig(),
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(loss, cls_loss, box_loss, normalizer) from per-image sums [B] (per_image_loss_terms),
    normalised as config.normalizer says: over all B images' positives ('batch'; with
    `axis_name`, summed over that mapped axis too) or per image, then averaged ('per_image').
    detection_loss's normalisation, and the validation loss's over a whole split."""
    box_scale = 4.0 if config.average_box_coordinates else 1.0
    total_pos = jnp.sum(num_pos)
    if config.normalizer == 'per_image':
        per_image = jnp.maximum(num_pos, 1.0)
        cls_loss = jnp.mean(cls_sum / per_image)
        box_loss = jnp.mean(box_sum / (per_image * box_scale))
        normalizer = jnp.mean(per_image)
    else:
        if axis_name is not None:
            total_pos = jax.lax.psum(total_pos, axis_name)
        normalizer = jnp.maximum(total_pos, 1.0)
        cls_loss = jnp.sum(cls_sum) / normalizer
        box_loss = jnp.sum(box_sum) / (normalizer * box_scale)
    return cls_loss + config.box_loss_weight * box_loss, cls_loss, box_loss, normalizer


def _check_inputs(cls_logits, box_deltas, anchors, gt_boxes, gt_labels) -> None:
    """Shape and dtype checks at trace time, so mistakes surface as plain Python errors."""
    for name, value, ndim in [('cls_logits', cls_logits, 3), ('gt_boxes', gt_boxes, 3)]:
        if not hasattr(value, 'shape') or len(value.shape) != ndim:
            got = getattr(value, 'shape', type(value).__name__)
            raise UserError(f'detection_loss: {name} must have rank {ndim}, got shape {got}')
    b, r, k = cls_logits.shape
    m = gt_boxes.shape[1]
    expected = {
        'box_deltas': (box_deltas, '[B, R, 4]', (b, r, 4)),
        'anchors': (anchors, '[R, 4]', (r, 4)),
        'gt_boxes': (gt_boxes, '[B, M, 4]', (b, m, 4)),
        'gt_labels': (gt_labels, '[B, M]', (b, m)),
    }
    for name, (value, dims, want) in expected.items():
        got = tuple(getattr(value, 'shape', ()))
        if got != want:
            raise UserError(
                f'detection_loss: {name} has shape {got}, expected {dims} = {want} '
                f'(B, R, K from cls_logits {tuple(cls_logits.shape)}, M from gt_boxes)'
            )
    if k < 1:
        raise UserError(f'detection_loss: cls_logits needs K >= 1 classes, got shape {(b, r, k)}')
    if not jnp.issubdtype(gt_labels.dtype, jnp.integer):
        raise UserError(
            f'detection_loss: gt_labels must be an integer array (-1 = padding), '
            f'got {gt_labels.dtype}'
        )
    for name, value in [
        ('cls_logits', cls_logits),
        ('box_deltas', box_deltas),
        ('anchors', anchors),
        ('gt_boxes', gt_boxes),
    ]:
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise UserError(f'detection_loss: {name} must be floating point, got {value.dtype}')
