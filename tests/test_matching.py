import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .helpers import require

require('torch', 'torchvision')

import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops.matching import (
    IGNORE,
    NEGATIVE,
    POSITIVE,
    MatcherConfig,
    match_anchors,
    match_iou,
)

from .helpers import random_boxes

P, N, IGN = POSITIVE, NEGATIVE, IGNORE
NO_LQ = MatcherConfig(low_quality_matches=False)
LQ = MatcherConfig(low_quality_matches=True)


def run(iou, valid=None, config=LQ):
    iou = jnp.asarray(iou, jnp.float32)
    if valid is None:
        valid = jnp.ones(iou.shape[1], bool)
    idx, labels = match_iou(iou, jnp.asarray(valid), config)
    return np.asarray(idx), np.asarray(labels)


def test_thresholds_and_ignore_band():
    iou = [[0.6, 0.1], [0.45, 0.2], [0.1, 0.3], [0.5, 0.0], [0.4, 0.0], [0.3999, 0.0]]
    idx, labels = run(iou, config=NO_LQ)
    np.testing.assert_array_equal(labels, [P, IGN, N, P, IGN, N])
    np.testing.assert_array_equal(idx, [0, 0, 1, 0, 0, 0])


def test_low_quality_adds_best_anchor_of_each_gt():
    iou = [[0.6, 0.1], [0.45, 0.2], [0.1, 0.3], [0.3, 0.39]]
    _, labels = run(iou, config=NO_LQ)
    np.testing.assert_array_equal(labels, [P, IGN, N, N])
    idx, labels = run(iou, config=LQ)
    # gt 1's best anchor is anchor 3 (0.39): it becomes positive, matched to gt 1.
    np.testing.assert_array_equal(labels, [P, IGN, N, P])
    np.testing.assert_array_equal(idx[[0, 3]], [0, 1])


def test_low_quality_anchor_keeps_its_own_argmax_gt():
    # Anchor 0 is gt 0's best anchor, but its own best gt is gt 1: torchvision assigns gt 1.
    iou = [[0.30, 0.35], [0.10, 0.34]]
    idx, labels = run(iou)
    np.testing.assert_array_equal(labels, [P, N])
    assert idx[0] == 1


def test_low_quality_ties_all_become_positive():
    iou = [[0.3, 0.0], [0.3, 0.0], [0.1, 0.0]]
    _, labels = run(iou)
    np.testing.assert_array_equal(labels, [P, P, N])  # gt 1 overlaps nothing: adds nothing


def test_padding_never_matches_even_low_quality():
    iou = [[0.9, 0.2], [0.95, 0.1]]
    idx, labels = run(iou, valid=[False, True])
    np.testing.assert_array_equal(idx, [1, 1])
    np.testing.assert_array_equal(labels, [P, N])  # anchor 0 is gt 1's best (0.2)


def test_all_padding_and_no_gt_are_all_negative():
    iou = np.full((5, 3), 0.9, np.float32)
    _, labels = run(iou, valid=[False, False, False])
    np.testing.assert_array_equal(labels, [N] * 5)
    _, labels = run(np.zeros((5, 0), np.float32), valid=np.zeros(0, bool))
    np.testing.assert_array_equal(labels, [N] * 5)


def test_bad_thresholds():
    with pytest.raises(ValueError, match='negative_threshold'):
        MatcherConfig(positive_threshold=0.3, negative_threshold=0.4)


@pytest.mark.parametrize('low_quality', [False, True])
def test_matches_torchvision_matcher(low_quality):
    rng = np.random.default_rng(0)
    image_hw = (128, 160)
    anchors = anchor_lib.generate_anchors(image_hw, anchor_lib.AnchorConfig.torchvision())
    gt = random_boxes(rng, 12, image_hw)
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)
    ref = matcher(box_iou(torch.from_numpy(gt), torch.tensor(anchors))).numpy()
    cfg = MatcherConfig(low_quality_matches=low_quality)
    idx, labels = match_anchors(anchors, gt, jnp.ones(12, bool), cfg)
    idx, labels = np.asarray(idx), np.asarray(labels)
    ours = np.where(labels == P, idx, np.where(labels == N, -1, -2))
    np.testing.assert_array_equal(ours, ref)
    assert (labels == P).sum() > 12  # the problem is not trivial


def test_vmap_equals_loop_and_jit_equals_eager():
    rng = np.random.default_rng(1)
    anchors = anchor_lib.generate_anchors((64, 96))
    gt = np.stack([random_boxes(rng, 6, (64, 96)) for _ in range(3)])
    valid = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    batched = jax.vmap(match_anchors, in_axes=(None, 0, 0))(anchors, gt, valid)
    jitted = jax.jit(jax.vmap(match_anchors, in_axes=(None, 0, 0)))(anchors, gt, valid)
    eager = match_anchors(anchors, gt[0], valid[0])  # op by op, as a user may call it
    np.testing.assert_array_equal(eager[0], batched[0][0])
    one = jax.jit(match_anchors)  # (the loop's images: one program)
    for i in range(3):
        single = one(anchors, gt[i], valid[i])
        for got_b, got_j, want in zip(batched, jitted, single, strict=True):
            np.testing.assert_array_equal(got_b[i], want)
            np.testing.assert_array_equal(got_j[i], want)
