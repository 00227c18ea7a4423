import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .helpers import require

require('torch', 'torchvision')

import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou as tv_box_iou
from torchvision.ops import generalized_box_iou as tv_giou

from retinanet_jax.ops import boxes as B

from .helpers import random_boxes


def test_format_round_trips():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 50)
    for to, back in [
        (B.box_xyxy_to_cxcywh, B.box_cxcywh_to_xyxy),
        (B.box_xyxy_to_xywh, B.box_xywh_to_xyxy),
    ]:
        np.testing.assert_allclose(back(to(boxes)), boxes, rtol=1e-6, atol=1e-4)


def test_format_golden():
    xyxy = jnp.array([[10.0, 20.0, 50.0, 80.0]])
    np.testing.assert_array_equal(B.box_xyxy_to_cxcywh(xyxy), [[30, 50, 40, 60]])
    np.testing.assert_array_equal(B.box_xyxy_to_xywh(xyxy), [[10, 20, 40, 60]])
    np.testing.assert_array_equal(B.box_area_xyxy(xyxy), [2400])
    np.testing.assert_array_equal(B.box_area_xyxy(jnp.array([5.0, 5.0, 4.0, 9.0])), 0)


def test_format_conversions_keep_the_dtype():
    """As torchvision's box_convert: xyxy <-> xywh keep any dtype (integers exactly); cxcywh
    keeps floating dtypes and gives integer boxes float32 (a centre may be a half pixel)."""
    xyxy = np.array([[10, 20, 51, 80]], np.int32)
    xywh = B.box_xyxy_to_xywh(xyxy)
    assert xywh.dtype == jnp.int32 and xywh.tolist() == [[10, 20, 41, 60]]
    back = B.box_xywh_to_xyxy(xywh)
    assert back.dtype == jnp.int32 and back.tolist() == xyxy.tolist()
    centres = B.box_xyxy_to_cxcywh(xyxy)
    assert centres.dtype == jnp.float32 and centres.tolist() == [[30.5, 50, 41, 60]]
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
        boxes = jnp.asarray(xyxy, dtype)
        for f in (B.box_xyxy_to_xywh, B.box_xywh_to_xyxy, B.box_xyxy_to_cxcywh):
            assert f(boxes).dtype == dtype, (f.__name__, dtype)
        assert B.box_cxcywh_to_xyxy(B.box_xyxy_to_cxcywh(boxes)).dtype == dtype
    assert B.box_area_xyxy(xyxy).dtype == jnp.float32  # areas upcast


def test_iou_hand_values():
    a = jnp.array([[0.0, 0.0, 10.0, 10.0]])
    b = jnp.array(
        [
            [0.0, 0.0, 10.0, 10.0],  # identical
            [5.0, 5.0, 15.0, 15.0],  # 25 / 175
            [0.0, 0.0, 5.0, 10.0],  # contained, half
            [20.0, 20.0, 30.0, 30.0],  # disjoint
            [10.0, 0.0, 20.0, 10.0],  # touching edge
            [3.0, 3.0, 3.0, 3.0],  # degenerate point inside
        ]
    )
    np.testing.assert_allclose(B.box_iou(a, b), [[1.0, 1 / 7, 0.5, 0.0, 0.0, 0.0]], rtol=1e-6)
    # Two degenerate boxes have an empty union: IoU 0, not NaN.
    point = jnp.array([[1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(B.box_iou(point, point), [[0.0]])


def test_iou_and_giou_match_torchvision():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    np.testing.assert_allclose(
        B.box_iou(a, b), tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        B.generalized_box_iou(a[:, None], b[None]),
        tv_giou(torch.from_numpy(a), torch.from_numpy(b)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_giou_golden():
    a = jnp.array([0.0, 0.0, 2.0, 2.0])
    b = jnp.array([3.0, 0.0, 4.0, 2.0])  # disjoint: IoU 0, hull 8, union 6
    np.testing.assert_allclose(B.generalized_box_iou(a, b), -2 / 8, rtol=1e-6)


@pytest.mark.parametrize('weights', [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip_and_torchvision(weights):
    rng = np.random.default_rng(2)
    gt, anchors = random_boxes(rng, 64), random_boxes(rng, 64)
    deltas = B.encode_boxes_xyxy(gt, anchors, weights)
    np.testing.assert_allclose(B.decode_boxes_xyxy(deltas, anchors, weights), gt, atol=1e-3)
    coder = BoxCoder(weights)
    tv_deltas = coder.encode_single(torch.from_numpy(gt), torch.from_numpy(anchors))
    np.testing.assert_allclose(deltas, tv_deltas, rtol=1e-5, atol=1e-5)
    tv_decoded = coder.decode_single(tv_deltas, torch.from_numpy(anchors))
    np.testing.assert_allclose(
        B.decode_boxes_xyxy(tv_deltas.numpy(), anchors, weights), tv_decoded, rtol=1e-5, atol=1e-3
    )


def test_encode_golden_and_min_size():
    anchor = jnp.array([0.0, 0.0, 10.0, 20.0])  # centre (5, 10), 10 x 20
    gt = jnp.array([2.0, 4.0, 22.0, 24.0])  # centre (12, 14), 20 x 20
    np.testing.assert_allclose(
        B.encode_boxes_xyxy(gt, anchor), [0.7, 0.2, np.log(2.0), 0.0], rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        B.encode_boxes_xyxy(gt, anchor, (10.0, 10.0, 5.0, 5.0)),
        [7.0, 2.0, 5 * np.log(2.0), 0.0],
        rtol=1e-6,
        atol=1e-6,
    )
    thin = jnp.array([5.0, 5.0, 5.0, 15.0])  # zero width
    d = B.encode_boxes_xyxy(thin, anchor, min_size=1.0)
    np.testing.assert_allclose(d[2], np.log(1 / 10), rtol=1e-6)
    assert np.isfinite(np.asarray(B.encode_boxes_xyxy(thin, anchor))).all()


def test_decode_clamps_scale():
    anchor = jnp.array([0.0, 0.0, 16.0, 16.0])
    out = B.decode_boxes_xyxy(jnp.array([0.0, 0.0, 100.0, 100.0]), anchor)
    np.testing.assert_allclose(out, [8 - 500, 8 - 500, 8 + 500, 8 + 500], rtol=1e-5)


def test_clip():
    boxes = jnp.array([[-5.0, -5.0, 50.0, 300.0], [10.0, 10.0, 20.0, 20.0]])
    np.testing.assert_array_equal(
        B.clip_boxes_xyxy(boxes, (100, 40)), [[0, 0, 40, 100], [10, 10, 20, 20]]
    )


def test_jit_equals_eager():
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 20), random_boxes(rng, 7)
    np.testing.assert_allclose(jax.jit(B.box_iou)(a, b), B.box_iou(a, b), rtol=1e-6)
    d = B.encode_boxes_xyxy(a, a[::-1])
    np.testing.assert_allclose(
        jax.jit(B.decode_boxes_xyxy)(d, a[::-1]),
        B.decode_boxes_xyxy(d, a[::-1]),
        rtol=1e-6,
        atol=1e-4,  # pixels; jit may re-associate the centre +- half-size arithmetic
    )


# ---------------------------------------------------------------- any dtype, any count

from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = ['float16', 'bfloat16', 'float32', 'float64', 'int16', 'int32']


def numpy_iou_giou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7):
    """Float64 reference of pairwise IoU (torchvision's box_iou, 0 where the union is empty) and
    GIoU (torchvision's generalized_box_iou_loss formula with its eps, so that boxes which the
    dtype rounds to zero width or height are defined: two such identical boxes give 0)."""
    a, b = a.astype(np.float64)[:, None], b.astype(np.float64)[None]
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = area(a) + area(b) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
    hull = (np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])) * (
        np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
    )
    return iou, inter / (union + eps) - (hull - union) / (hull + eps)


N_MAX = 6


def box_arrays(limit=1000.0):
    """[n, 4] xyxy boxes with corners in [0, limit], at least 1 pixel wide and tall; n is 0, 1
    or N_MAX."""
    corner = hnp.arrays(np.float64, (N_MAX, 2), elements=st.floats(0, limit - 2))
    size = hnp.arrays(np.float64, (N_MAX, 2), elements=st.floats(1, limit))
    return st.tuples(corner, size, st.sampled_from([0, 1, N_MAX])).map(
        lambda t: np.concatenate([t[0], np.minimum(t[0] + t[1], limit)], 1)[: t[2]]
    )


# One compiled program per dtype: both sides are padded to N_MAX rows and the [n, m] corner is
# compared (each pair's value depends on that pair alone). Each new shape would compile anew,
# op by op when called eagerly; empty inputs: test_zero_boxes_everywhere_under_jit.
padded_iou = jax.jit(lambda a, b: B.box_iou(a, b))
padded_giou = jax.jit(lambda a, b: B.generalized_box_iou(a[:, None], b[None]))


def pad(boxes: np.ndarray) -> np.ndarray:
    rows = np.zeros((N_MAX, 4), boxes.dtype)
    rows[: len(boxes)] = boxes
    return rows


@settings(max_examples=40, deadline=None)
@given(box_arrays(), box_arrays(), st.sampled_from(DTYPES))
@example(  # bfloat16 rounds 129.5 and 130.5 both to 130: a zero-height box against itself
    a=np.array([[0.0, 129.5, 1.0, 130.5]]), b=np.array([[0.0, 129.5, 1.0, 130.5]]), dtype='bfloat16'
)
def test_iou_and_giou_in_every_dtype_match_float64(a, b, dtype):
    dtype = jnp.dtype(dtype)  # numpy arrays of it (bfloat16 through ml_dtypes)
    qa = (np.round(a) if dtype.kind == 'i' else a).astype(dtype)  # what the function is given
    qb = (np.round(b) if dtype.kind == 'i' else b).astype(dtype)
    want_iou, want_giou = numpy_iou_giou(qa.astype(np.float64), qb.astype(np.float64))
    got_iou = padded_iou(pad(qa), pad(qb))
    got_giou = padded_giou(pad(qa), pad(qb))
    assert got_iou.dtype == jnp.float32 and got_giou.dtype == jnp.float32  # (no x64 here)
    tol = 1e-6 if dtype == np.float32 else 1e-3
    np.testing.assert_allclose(got_iou[: len(a), : len(b)], want_iou, atol=tol, rtol=0)
    np.testing.assert_allclose(got_giou[: len(a), : len(b)], want_giou, atol=tol, rtol=0)


def test_float16_and_int16_products_do_not_overflow():
    a = np.array([[100.0, 100.0, 900.0, 900.0]])
    b = np.array([[110.0, 110.0, 910.0, 910.0], [500.0, 500.0, 990.0, 990.0]])
    for dtype in ('float16', 'bfloat16', 'int16'):  # 800^2 overflows float16, wraps int16
        qa, qb = a.astype(jnp.dtype(dtype)), b.astype(jnp.dtype(dtype))
        want = numpy_iou_giou(qa.astype(np.float64), qb.astype(np.float64))[0]
        np.testing.assert_allclose(B.box_iou(qa, qb), want, atol=1e-3, err_msg=dtype)
        assert 0.9 < float(B.box_iou(qa, qb)[0, 0]) < 1
    np.testing.assert_allclose(B.box_area_xyxy(a.astype('int16')), [640000.0])


def test_zero_boxes_everywhere_under_jit():
    empty = jnp.zeros((0, 4))
    assert jax.jit(B.box_iou)(empty, jnp.ones((3, 4))).shape == (0, 3)
    assert jax.jit(B.box_iou)(jnp.ones((2, 4)), empty).shape == (2, 0)
    assert jax.jit(B.generalized_box_iou)(empty, empty).shape == (0,)
    for f in (B.box_xyxy_to_cxcywh, B.box_cxcywh_to_xyxy, B.box_xyxy_to_xywh, B.box_xywh_to_xyxy):
        assert jax.jit(f)(empty).shape == (0, 4)
    assert jax.jit(B.box_area_xyxy)(empty).shape == (0,)
    assert jax.jit(B.encode_boxes_xyxy)(empty, empty).shape == (0, 4)
    assert jax.jit(B.decode_boxes_xyxy)(empty, empty).shape == (0, 4)
    assert B.clip_boxes_xyxy(empty, (10, 10)).shape == (0, 4)
