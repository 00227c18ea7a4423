import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .helpers import require

require('torch', 'torchvision')

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops import losses
from retinanet_jax.ops.losses import LossConfig, detection_loss
from retinanet_jax.testing import pytorch_retinanet
from retinanet_jax.testing.torchvision_retinanet import tiny_retinanet

from .helpers import random_problem

IMAGE_HW = (128, 160)
K = 6
M = 16


def test_focal_loss_golden_values():
    # x = 0, positive: 0.25 * 0.5^2 * log 2; negative: 0.75 * 0.5^2 * log 2.
    got = losses.sigmoid_focal_loss(jnp.array([0.0, 0.0]), jnp.array([1, 0]))
    np.testing.assert_allclose(got, [0.0625 * np.log(2), 0.1875 * np.log(2)], rtol=1e-6)
    # x = 2, negative: p = sigmoid(2); (1 - alpha) p^2 (-log(1 - p)).
    p = 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(
        losses.sigmoid_focal_loss(jnp.array(2.0), jnp.array(0)),
        0.75 * p**2 * -np.log(1 - p),
        rtol=1e-6,
    )


def test_focal_loss_matches_torchvision_and_is_stable():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 4, 2000), [-80.0, -30.0, 30.0, 80.0]]).astype(np.float32)
    t = (rng.random(x.shape) < 0.3).astype(np.float32)
    t[-4:] = [1, 0, 1, 0]
    for alpha, gamma in [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5)]:
        ref = tv_sigmoid_focal_loss(
            torch.from_numpy(x).double(), torch.from_numpy(t).double(), alpha=alpha, gamma=gamma
        )
        got = losses.sigmoid_focal_loss(x, t, alpha, gamma)
        np.testing.assert_allclose(
            got, ref.numpy(), rtol=2e-5, atol=1e-11
        )  # torch loses digits below 1e-11
    huge = jnp.array([-1e4, 1e4, -1e4, 1e4])
    value, grad = jax.value_and_grad(
        lambda v: losses.sigmoid_focal_loss(v, jnp.array([1, 1, 0, 0])).sum()
    )(huge)
    assert np.isfinite(value) and np.isfinite(np.asarray(grad)).all()


def test_smooth_l1_matches_torch():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 100)).astype(np.float32)
    for beta in [0.0, 1 / 9, 0.11, 1.0]:
        ref = nn.functional.smooth_l1_loss(
            torch.from_numpy(a), torch.from_numpy(b), reduction='none', beta=beta
        )
        np.testing.assert_allclose(losses.smooth_l1_loss(a, b, beta), ref, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- torchvision parity


def torch_leaf(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def torchvision_loss(model, cls_logits, box_deltas, anchors, gt_boxes, gt_labels):
    cls_t, box_t = torch_leaf(cls_logits), torch_leaf(box_deltas)
    targets = [
        {
            'boxes': torch.tensor(b[lab >= 0], dtype=torch.float64),
            'labels': torch.tensor(lab[lab >= 0]).long(),
        }
        for b, lab in zip(gt_boxes, gt_labels, strict=True)
    ]
    anchors_t = [torch.tensor(anchors, dtype=torch.float64)] * len(gt_boxes)
    out = model.compute_loss(targets, {'cls_logits': cls_t, 'bbox_regression': box_t}, anchors_t)
    (out['classification'] + out['bbox_regression']).backward()
    return (
        out['classification'].item(),
        out['bbox_regression'].item(),
        cls_t.grad.numpy(),
        box_t.grad.numpy(),
    )


def assert_grads_close(got, want):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * scale)


def loss_and_grads(config, cls_logits, box_deltas, anchors, gt_boxes, gt_labels):
    def f(c, b):
        return detection_loss(c, b, anchors, gt_boxes, gt_labels, config)

    (loss, aux), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(cls_logits, box_deltas)
    return loss, aux, grads


@pytest.mark.parametrize('variant', ['v1', 'v2'])
@pytest.mark.parametrize('num_boxes', [(0, 0), (1, 0), (1, 1), (12, 5)])
def test_matches_torchvision_compute_loss(variant, num_boxes):
    config = LossConfig.torchvision() if variant == 'v1' else LossConfig.torchvision_v2()
    model = tiny_retinanet(K, 'l1' if variant == 'v1' else 'giou')
    anchors = anchor_lib.generate_anchors(IMAGE_HW, anchor_lib.AnchorConfig.torchvision())
    rng = np.random.default_rng(sum(num_boxes))
    problem = random_problem(rng, num_boxes, len(anchors), K, M, IMAGE_HW)
    ref_cls, ref_box, ref_gcls, ref_gbox = torchvision_loss(
        model, *problem[:2], anchors, *problem[2:]
    )
    loss, aux, (gcls, gbox) = loss_and_grads(config, *problem[:2], anchors, *problem[2:])
    np.testing.assert_allclose(aux['cls_loss'], ref_cls, rtol=1e-5)
    np.testing.assert_allclose(aux['box_loss'], ref_box, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss, ref_cls + ref_box, rtol=1e-5)
    assert_grads_close(gcls, ref_gcls)
    assert_grads_close(gbox, ref_gbox)
    if sum(num_boxes):
        assert aux['num_positives'] > 0 and aux['box_loss'] > 0


# ---------------------------------------------------------------- reference FocalLoss parity


def reference_loss(cls_logits, box_deltas, anchors, gt_boxes, gt_labels):
    cls_t, box_t = torch_leaf(cls_logits), torch_leaf(box_deltas)
    annotations = torch.tensor(
        np.concatenate([gt_boxes, gt_labels[..., None]], -1), dtype=torch.float64
    )
    anchors_t = torch.tensor(anchors, dtype=torch.float64)[None]
    cls, box = pytorch_retinanet.FocalLoss()(torch.sigmoid(cls_t), box_t, anchors_t, annotations)
    (cls + box).sum().backward()
    # With no annotation anywhere the reference's box term is a constant: no gradient at all.
    box_grad = np.zeros_like(box_deltas) if box_t.grad is None else box_t.grad.numpy()
    return cls.item(), box.item(), cls_t.grad.numpy(), box_grad


@pytest.mark.parametrize('num_boxes', [(0, 0), (1, 0), (1, 1), (12, 5)])
def test_matches_reference_focal_loss(num_boxes):
    config = LossConfig.pytorch_retinanet()
    anchors = anchor_lib.generate_anchors(IMAGE_HW, anchor_lib.AnchorConfig.pytorch_retinanet())
    rng = np.random.default_rng(10 + sum(num_boxes))
    cls_logits, box_deltas, gt_boxes, gt_labels = random_problem(
        rng, num_boxes, len(anchors), K, M, IMAGE_HW
    )
    cls_logits = np.clip(cls_logits, -9.0, 9.0)  # inside the reference's [1e-4, 1 - 1e-4] clamp
    # Include a box thinner than 1 pixel, so the reference's 1-pixel floor is exercised.
    if num_boxes[0] >= 12:
        gt_boxes[0, 0] = [40.0, 30.0, 40.5, 90.0]
    ref_cls, ref_box, ref_gcls, ref_gbox = reference_loss(
        cls_logits, box_deltas, anchors, gt_boxes, gt_labels
    )
    _loss, aux, (gcls, gbox) = loss_and_grads(
        config, cls_logits, box_deltas, anchors, gt_boxes, gt_labels
    )
    np.testing.assert_allclose(aux['cls_loss'], ref_cls, rtol=1e-5)
    np.testing.assert_allclose(aux['box_loss'], ref_box, rtol=1e-5, atol=1e-7)
    assert_grads_close(gcls, ref_gcls)
    assert_grads_close(gbox, ref_gbox)


# ---------------------------------------------------------------- normalisers, jit, vmap


def test_batch_normaliser_by_hand():
    anchors = anchor_lib.generate_anchors(IMAGE_HW)
    rng = np.random.default_rng(3)
    problem = random_problem(rng, (3, 0, 7), len(anchors), K, M, IMAGE_HW)
    cls_logits, box_deltas, gt_boxes, gt_labels = problem
    per_image = jax.jit(losses.per_image_loss_terms)  # one program for the three images
    sums = [
        per_image(cls_logits[i], box_deltas[i], anchors, gt_boxes[i], gt_labels[i])
        for i in range(3)
    ]
    cls_sum, box_sum, npos = (np.array(v) for v in zip(*sums, strict=True))
    _loss, aux = detection_loss(
        problem[0], problem[1], anchors, problem[2], problem[3], LossConfig.paper()
    )
    np.testing.assert_allclose(aux['num_positives'], npos.sum())
    np.testing.assert_allclose(aux['cls_loss'], cls_sum.sum() / npos.sum(), rtol=1e-6)
    np.testing.assert_allclose(aux['box_loss'], box_sum.sum() / npos.sum(), rtol=1e-6)
    _, aux_pi = detection_loss(
        *problem[:2], anchors, *problem[2:], LossConfig(normalizer='per_image')
    )
    np.testing.assert_allclose(
        aux_pi['cls_loss'], np.mean(cls_sum / np.maximum(npos, 1)), rtol=1e-6
    )


def test_jit_equals_eager_and_vmap_equals_loop():
    anchors = anchor_lib.generate_anchors(IMAGE_HW)
    problem = random_problem(np.random.default_rng(4), (2, 9, 0), len(anchors), K, M, IMAGE_HW)
    jitted = detection_loss(problem[0], problem[1], anchors, problem[2], problem[3])
    with jax.disable_jit():
        eager = detection_loss(problem[0], problem[1], anchors, problem[2], problem[3])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), jitted, eager)
    fn = functools.partial(losses.per_image_loss_terms, anchors=anchors)
    batched = jax.vmap(lambda c, b, g, lab: fn(c, b, gt_boxes=g, gt_labels=lab))(*problem)
    single_image = jax.jit(fn)  # (the loop's images: one program, not op-by-op dispatch)
    for i in range(3):
        single = single_image(
            problem[0][i], problem[1][i], gt_boxes=problem[2][i], gt_labels=problem[3][i]
        )
        for got, want in zip(batched, single, strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-5)


def test_axis_name_sums_positives_across_shards():
    anchors = anchor_lib.generate_anchors(IMAGE_HW)
    problem = random_problem(np.random.default_rng(5), (3, 1), len(anchors), K, M, IMAGE_HW)
    whole, _ = detection_loss(*problem[:2], anchors, *problem[2:])
    per_shard = jax.vmap(
        lambda c, b, g, lab: detection_loss(
            c[None], b[None], anchors, g[None], lab[None], axis_name='i'
        )[0],
        axis_name='i',
    )(*problem)
    np.testing.assert_allclose(per_shard.sum(), whole, rtol=1e-6)


# ---------------------------------------------------------------- robustness


def assert_finite(config, cls_logits, box_deltas, anchors, gt_boxes, gt_labels):
    loss, aux, grads = loss_and_grads(config, cls_logits, box_deltas, anchors, gt_boxes, gt_labels)
    assert np.isfinite(loss), aux
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()
    return loss, aux


ALL_PRESETS = [
    LossConfig.paper(),
    LossConfig.torchvision(),
    LossConfig.torchvision_v2(),
    LossConfig.pytorch_retinanet(),
]


@pytest.mark.parametrize('config', ALL_PRESETS)
def test_finite_on_degenerate_ground_truth(config):
    anchors = anchor_lib.generate_anchors(IMAGE_HW)
    rng = np.random.default_rng(6)
    cls_logits, box_deltas, _, _ = random_problem(rng, (0,) * 6, len(anchors), K, M, IMAGE_HW)
    gt_boxes = np.zeros((6, M, 4), np.float32)
    gt_labels = np.full((6, M), -1, np.int32)
    gt_boxes[1, :3] = [[10, 10, 10, 60], [20, 20, 80, 20], [30, 30, 30, 30]]  # zero width/height
    gt_boxes[2, :2] = [[-50, -50, 20, 20], [150, 100, 400, 300]]  # partly outside
    gt_boxes[3, :2] = [[-300, -300, -200, -200], [1000, 1000, 1100, 1100]]  # wholly outside
    gt_boxes[4, :4] = [[10, 10, 60, 50]] * 4  # duplicates
    gt_boxes[5, :] = np.nan  # padding rows may hold garbage
    gt_labels[1, :3] = gt_labels[2, :2] = gt_labels[3, :2] = 1
    gt_labels[4, :4] = [0, 1, 2, 3]
    # image 0: no boxes at all.
    _, aux = assert_finite(config, cls_logits, box_deltas, anchors, gt_boxes, gt_labels)
    assert aux['num_positives'] > 0


def test_finite_and_padding_invariant_with_m_1000():
    anchors = anchor_lib.generate_anchors((64, 64))
    rng = np.random.default_rng(7)
    cls_logits, box_deltas, gt_boxes, gt_labels = random_problem(
        rng, (5, 1000), len(anchors), K, 1000, (64, 64)
    )
    _loss, _ = assert_finite(LossConfig(), cls_logits, box_deltas, anchors, gt_boxes, gt_labels)
    # The same image 0 padded to M = 5 gives the same loss terms.
    small = detection_loss(
        cls_logits[:1], box_deltas[:1], anchors, gt_boxes[:1, :5], gt_labels[:1, :5]
    )
    big = detection_loss(cls_logits[:1], box_deltas[:1], anchors, gt_boxes[:1], gt_labels[:1])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), small, big)


def test_no_recompilation_when_box_count_changes():
    anchors = anchor_lib.generate_anchors(IMAGE_HW)
    rng = np.random.default_rng(8)
    config = LossConfig(box_loss_weight=0.5)  # a config no other test compiles
    problem = random_problem(rng, (1, 1), len(anchors), K, M, IMAGE_HW)
    detection_loss(*problem[:2], anchors, *problem[2:], config)
    before = detection_loss._cache_size()
    for counts in [(0, 0), (16, 3), (7, 16)]:
        problem = random_problem(rng, counts, len(anchors), K, M, IMAGE_HW)
        detection_loss(*problem[:2], anchors, *problem[2:], config)
    assert detection_loss._cache_size() == before


boxes_strategy = st.lists(
    st.tuples(
        st.floats(-40, 100),
        st.floats(-40, 100),
        st.floats(0, 80),
        st.floats(0, 80),
        st.integers(-1, K - 1),
    ),
    min_size=0,
    max_size=8,
)


@settings(max_examples=25, deadline=None)
@given(boxes=boxes_strategy, extra_padding=st.integers(0, 3))
@example(  # 10 anchors tie on a small box; with 8 slots XLA rounded 8 of their IoUs one step lower
    boxes=[(0.0, 0.0, 0.0, 0.0, 0)] * 3 + [(0.0, 0.0, 2.952950577740588, 10.785897339685759, 0)],
    extra_padding=3,
)
def test_property_random_ground_truth(boxes, extra_padding):
    """Any ground-truth set gives a finite loss and gradient, and extra padding changes nothing."""
    image_hw = (64, 64)
    anchors = anchor_lib.generate_anchors(image_hw)
    rng = np.random.default_rng(len(boxes))
    cls_logits = rng.normal(size=(1, len(anchors), K)).astype(np.float32)
    box_deltas = rng.normal(size=(1, len(anchors), 4)).astype(np.float32)
    m = 8
    gt_boxes = np.zeros((1, m + extra_padding, 4), np.float32)
    gt_labels = np.full((1, m + extra_padding), -1, np.int32)
    for i, (x, y, w, h, label) in enumerate(boxes):
        gt_boxes[0, i], gt_labels[0, i] = [x, y, x + w, y + h], label
    loss, _aux = assert_finite(LossConfig(), cls_logits, box_deltas, anchors, gt_boxes, gt_labels)
    unpadded = detection_loss(cls_logits, box_deltas, anchors, gt_boxes[:, :m], gt_labels[:, :m])
    np.testing.assert_allclose(unpadded[0], loss, rtol=1e-6)


# ---------------------------------------------------------------- bad input


def test_bad_shapes_name_the_argument():
    anchors = anchor_lib.generate_anchors((64, 64))
    r = len(anchors)
    ok = dict(
        cls_logits=np.zeros((2, r, 3), np.float32),
        box_deltas=np.zeros((2, r, 4), np.float32),
        anchors=anchors,
        gt_boxes=np.zeros((2, 5, 4), np.float32),
        gt_labels=np.zeros((2, 5), np.int32),
    )
    cases = {
        'gt_boxes': dict(gt_boxes=np.zeros((5, 4), np.float32)),
        'box_deltas': dict(box_deltas=np.zeros((2, r, 5), np.float32)),
        'anchors': dict(anchors=anchors[:-1]),
        'gt_labels': dict(gt_labels=np.zeros((2, 4), np.int32)),
        'cls_logits': dict(cls_logits=np.zeros((r, 3), np.float32)),
    }
    for name, override in cases.items():
        with pytest.raises(ValueError, match=name):
            detection_loss(**{**ok, **override})
    with pytest.raises(ValueError, match='gt_labels must be an integer'):
        detection_loss(**{**ok, 'gt_labels': np.zeros((2, 5), np.float32)})
    with pytest.raises(ValueError, match='box_loss'):
        LossConfig(box_loss='l2')


def test_no_ground_truth_slots_is_the_all_negative_loss():
    """gt_boxes [B, 0, 4] (torchvision's negative-sample case): the loss of all-negative
    anchors, with finite gradients, under jit."""
    rng = np.random.default_rng(0)
    anchors = anchor_lib.generate_anchors((64, 64))
    cls, box, _, _ = random_problem(rng, [0, 0], len(anchors), 3, 1, (64, 64))
    empty = detection_loss(
        cls, box, anchors, np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.int32)
    )
    padded = detection_loss(
        cls, box, anchors, np.zeros((2, 1, 4), np.float32), np.full((2, 1), -1, np.int32)
    )
    np.testing.assert_allclose(empty[0], padded[0], rtol=1e-6)
    assert float(empty[1]['num_positives']) == 0 and float(empty[1]['box_loss']) == 0

    def total(c, b):
        return detection_loss(c, b, anchors, jnp.zeros((2, 0, 4)), jnp.zeros((2, 0), jnp.int32))[0]

    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(cls, box)
    assert all(np.isfinite(g).all() for g in grads) and not np.asarray(grads[1]).any()
