"""nms.py: golden values, ties, empty inputs and float16, and parity with torchvision.ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .helpers import require

require('torch', 'torchvision')

import torch
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import nms as tv_nms

from retinanet_jax.ops.nms import batched_nms, batched_nms_op, nms


def kept(indices, valid):
    return np.asarray(indices)[np.asarray(valid)]


def test_nms_golden():
    boxes = jnp.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], jnp.float32
    )
    scores = jnp.array([0.9, 0.8, 0.7, 0.95])
    # 3 (0.95) suppresses 0 (IoU 0.9) and 1 (IoU 0.62 > 0.5); 2 is apart.
    np.testing.assert_array_equal(kept(*nms(boxes, scores, 0.5, 4)), [3, 2])
    np.testing.assert_array_equal(kept(*nms(boxes, scores, 0.95, 4)), [3, 0, 1, 2])
    np.testing.assert_array_equal(kept(*nms(boxes, scores, 0.5, 1)), [3])
    valid = jnp.array([True, True, True, False])
    np.testing.assert_array_equal(kept(*nms(boxes, scores, 0.5, 4, valid)), [0, 2])


def test_ties_go_to_the_lower_index():
    boxes = jnp.array([[0, 0, 10, 10]] * 3, jnp.float32)
    np.testing.assert_array_equal(kept(*nms(boxes, jnp.array([0.5, 0.5, 0.5]), 0.5, 3)), [0])
    labels = jnp.array([1, 0, 1])
    np.testing.assert_array_equal(
        kept(*batched_nms(boxes, jnp.array([0.5, 0.5, 0.5]), labels, 0.5, 3)), [0, 1]
    )


@pytest.mark.parametrize('seed', range(4))
def test_batched_nms_matches_torchvision_on_heavy_overlap(seed):
    rng = np.random.default_rng(seed)
    n = 600
    centres = rng.uniform(40, 60, (n, 2))  # everything piled in one 20 px region
    sizes = rng.uniform(5, 30, (n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n  # distinct
    labels = rng.integers(0, 4, n)
    ref = tv_batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5
    )
    ours = batched_nms(boxes, scores, labels, 0.5, n)
    np.testing.assert_array_equal(kept(*ours), ref.numpy())
    ref1 = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3)
    np.testing.assert_array_equal(kept(*nms(boxes, scores, 0.3, n)), ref1.numpy())
    assert 10 < len(ref) < n  # heavy suppression happened, not none and not all


def test_nms_of_zero_boxes_and_of_float16_boxes():
    indices, valid = jax.jit(lambda b, s: nms(b, s, 0.5, 5))(jnp.zeros((0, 4)), jnp.zeros((0,)))
    assert indices.shape == valid.shape == (5,) and not valid.any()
    nothing = (jnp.zeros((0, 4)), jnp.zeros((0,)), jnp.zeros((0,), jnp.int32))
    for indices, valid in (
        batched_nms(*nothing, 0.5, 3),
        batched_nms_op(*nothing, 0.5, 3, None, 3),
    ):
        assert indices.shape == (3,) and not valid.any()
    # 800-pixel boxes: their areas overflow float16; the overlapping one must still go.
    boxes = np.array([[100, 100, 900, 900], [110, 110, 910, 910], [0, 0, 50, 50]], np.float16)
    indices, valid = nms(boxes, np.array([0.9, 0.8, 0.7], np.float16), 0.5, 3)
    assert kept(indices, valid).tolist() == [0, 2]
