"""Greedy non-maximum suppression with static shapes: fixed-size indices plus a validity mask.

  nms(boxes [N, 4] xyxy, scores [N], iou_threshold, max_output, valid [N] | None,
      labels [N] | None) -> (indices [max_output] int32, kept [max_output] bool)
  batched_nms(...)      class-aware: boxes of different labels never suppress each other
  batched_nms_op(...)   batched_nms as the primitive `nms_p`, which exporters map to their own
                        NMS operator (inference/export.py: ONNX's NonMaxSuppression);
                        post-processing uses it

Best score first; among equal scores the lower index wins; N may be 0. IoU is computed in
float32 or wider whatever the boxes' dtype.
"""

import jax
import jax.extend
import jax.numpy as jnp
from jax.interpreters import batching, mlir

from retinanet_jax.ops import boxes as box_lib


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
) -> tuple[jax.Array, jax.Array]:
    """Class-aware NMS: boxes of different labels never suppress each other. (Exact, unlike
    torchvision's coordinate-offset trick, which loses float32 precision far from the origin.)

    boxes [N, 4] xyxy, scores [N], labels [N] int, valid [N] -> (indices [max_output] int32,
    kept [max_output] bool), as `nms`."""
    return nms(boxes, scores, iou_threshold, max_output, valid, labels)


def batched_nms_op(
    boxes: jax.Array,
    scores: jax.Array,
    labels: jax.Array,
    iou_threshold: float,
    max_output: int,
    valid: jax.Array | None,
    num_classes: int,
) -> tuple[jax.Array, jax.Array]:
    """`batched_nms` as the one primitive `nms_p`: the same greedy NMS in JAX (any number of
    leading batch dimensions: boxes [..., N, 4], scores / labels / valid [..., N], labels in
    [0, num_classes)), and ONNX's NonMaxSuppression in an ONNX export (inference/export.py)."""
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
# operator (inference/export.py: ONNX NonMaxSuppression). In JAX it is `nms` (any number of
# leading batch dimensions, vmap-able, lowered for jit and jax.export). Scores of -inf are not
# candidates.
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
