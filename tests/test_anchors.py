import math

import numpy as np
import pytest

from .helpers import require

require('torch', 'torchvision')

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import _default_anchorgen

from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops.anchors import AnchorConfig
from retinanet_jax.testing import pytorch_retinanet

R2 = math.sqrt(2.0)


def test_base_anchors_level3_exact_by_hand():
    s1, s2 = 2 ** (1 / 3), 2 ** (2 / 3)
    rows = []
    for ratio in (0.5, 1.0, 2.0):  # ratio-major
        for scale in (1.0, s1, s2):  # scale-minor
            w = 32 * scale / math.sqrt(ratio)
            h = 32 * scale * math.sqrt(ratio)
            rows.append([-w / 2, -h / 2, w / 2, h / 2])
    got = anchor_lib.base_anchors(0, AnchorConfig.paper())
    np.testing.assert_allclose(got, rows, rtol=1e-12)
    # The first is 16*sqrt(2) wide-half and 8*sqrt(2) tall-half: a 2:1 box of area 32^2.
    np.testing.assert_allclose(got[0], [-16 * R2, -8 * R2, 16 * R2, 8 * R2], rtol=1e-12)


def test_base_anchors_torchvision_rounded_golden():
    expected = [
        [-23, -11, 23, 11], [-28, -14, 28, 14], [-35, -18, 35, 18],
        [-16, -16, 16, 16], [-20, -20, 20, 20], [-25, -25, 25, 25],
        [-11, -23, 11, 23], [-14, -28, 14, 28], [-18, -35, 18, 35],
    ]  # fmt: skip
    np.testing.assert_array_equal(anchor_lib.base_anchors(0, AnchorConfig.torchvision()), expected)


@pytest.mark.parametrize(
    'image_hw, grids, total',
    [
        ((640, 832), [(80, 104), (40, 52), (20, 26), (10, 13), (5, 7)], 99_765),
        ((800, 800), [(100, 100), (50, 50), (25, 25), (13, 13), (7, 7)], 120_087),
        ((100, 150), [(13, 19), (7, 10), (4, 5), (2, 3), (1, 2)], 3_105),
        ((1, 1), [(1, 1)] * 5, 45),
        ((512, 512), [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)], 49_104),
        ((416, 416), [(52, 52), (26, 26), (13, 13), (7, 7), (4, 4)], 32_526),
    ],
)
def test_counts_per_level(image_hw, grids, total):
    cfg = AnchorConfig()
    assert anchor_lib.level_grid_sizes(image_hw, cfg) == tuple(grids)
    assert anchor_lib.num_anchors(image_hw, cfg) == total
    anchors = anchor_lib.generate_anchors(image_hw, cfg)
    assert anchors.shape == (total, 4)
    assert anchors.dtype == np.float32


def test_order_is_level_row_column_anchor():
    cfg = AnchorConfig()
    image_hw = (100, 150)
    anchors = anchor_lib.generate_anchors(image_hw, cfg)
    grids = anchor_lib.level_grid_sizes(image_hw, cfg)
    level_index, row, col, a = 1, 2, 3, 5  # level 4
    start = sum(gh * gw * 9 for gh, gw in grids[:level_index])
    gw = grids[level_index][1]
    idx = start + (row * gw + col) * 9 + a
    expected = anchor_lib.base_anchors(level_index, cfg)[a] + np.array(
        [(col + 0.5) * 16, (row + 0.5) * 16] * 2
    )
    np.testing.assert_allclose(anchors[idx], expected, rtol=1e-6)


def test_anchors_are_read_only_and_cached():
    a = anchor_lib.generate_anchors((64, 64))
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
    assert anchor_lib.generate_anchors((64, 64)) is a


@pytest.mark.parametrize('image_hw', [(640, 832), (100, 150), (257, 511)])
def test_pytorch_retinanet_preset_matches_reference_port(image_hw):
    ours = anchor_lib.generate_anchors(image_hw, AnchorConfig.pytorch_retinanet())
    ref = pytorch_retinanet.anchors_for_image_shape(image_hw)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    'image_hw', [(256, 384), (512, 512), (128, 640), (416, 416), (800, 1216), (96, 224)]
)
def test_torchvision_preset_matches_torchvision(image_hw):
    """At every multiple of 32, strides included: torchvision's image // grid (416: 59 at P6
    and 104 at P7), which the torchvision preset's stride='image_over_grid' follows."""
    cfg = AnchorConfig.torchvision()
    generator: AnchorGenerator = _default_anchorgen()
    images = ImageList(torch.zeros(1, 3, *image_hw), [image_hw])
    features = [torch.zeros(1, 1, gh, gw) for gh, gw in anchor_lib.level_grid_sizes(image_hw, cfg)]
    ref = generator(images, features)[0].numpy()
    np.testing.assert_array_equal(anchor_lib.generate_anchors(image_hw, cfg), ref)


def test_strides_by_convention_at_a_canvas_of_416():
    grids = anchor_lib.level_grid_sizes((416, 416), AnchorConfig())
    strides = {
        rule: [
            anchor_lib.level_strides((416, 416), level, grid, AnchorConfig(stride=rule))[0]
            for level, grid in zip(range(3, 8), grids, strict=True)
        ]
        for rule in anchor_lib.STRIDES
    }
    assert strides == {'level': [8, 16, 32, 64, 128], 'image_over_grid': [8, 16, 32, 59, 104]}
    paper = anchor_lib.generate_anchors((416, 416), AnchorConfig())
    over_grid = anchor_lib.generate_anchors((416, 416), AnchorConfig(stride='image_over_grid'))
    p6 = slice(sum(g * h * 9 for g, h in grids[:3]), sum(g * h * 9 for g, h in grids[:4]))
    np.testing.assert_array_equal(paper[: p6.start], over_grid[: p6.start])  # P3-P5 the same
    # the last P6 cell's centre: (6 + 0.5) * 64 against (6 + 0.5) * 59
    centre = (paper[p6][-1, :2] + paper[p6][-1, 2:]) / 2
    np.testing.assert_allclose(centre, [416.0, 416.0])
    np.testing.assert_allclose((over_grid[p6][-1, :2] + over_grid[p6][-1, 2:]) / 2, [383.5] * 2)
    with pytest.raises(ValueError, match=r"stride must be one of \('level', 'image_over_grid'\)"):
        AnchorConfig(stride='torch')


@pytest.mark.parametrize(
    'size, ok', [((416, 416), True), ((800, 1344), True), ((400, 416), False), ((64, 100), False)]
)
def test_canvas_sides_are_multiples_of_32(size, ok):
    if ok:
        assert anchor_lib.check_image_size(size) == size
        assert anchor_lib.padded_size(size) == size
        return
    up = anchor_lib.padded_size(size)
    assert all(v % 32 == 0 and 0 <= v - s < 32 for v, s in zip(up, size, strict=True))
    with pytest.raises(ValueError, match=rf'image size {size[0]}x{size[1]}: .*multiple of 32'):
        anchor_lib.check_image_size(size)


@pytest.mark.parametrize('bad', [(0, 10), (10.5, 10), 'ab', (10,), None])
def test_bad_image_size_is_named(bad):
    with pytest.raises(ValueError, match='image_hw'):
        anchor_lib.generate_anchors(bad)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match='sizes'):
        AnchorConfig(sizes=(32.0, 64.0))
    with pytest.raises(ValueError, match='max_level'):
        AnchorConfig(min_level=5, max_level=3, sizes=())
