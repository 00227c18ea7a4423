import jax
import jax.numpy as jnp
import numpy as np

from .helpers import require

require('torch', 'torchvision')

import torch

from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops.postprocess import (
    PostprocessConfig,
    boxes_to_original,
    postprocess,
    score_logit,
)
from retinanet_jax.testing.torchvision_retinanet import tiny_retinanet


def torchvision_postprocess(
    cls_logits, box_deltas, anchors, anchors_per_level, image_sizes, k, score_thresh=0.05
):
    model = tiny_retinanet(k)
    model.score_thresh = score_thresh
    heads = {
        'cls_logits': list(torch.from_numpy(cls_logits).split(anchors_per_level, dim=1)),
        'bbox_regression': list(torch.from_numpy(box_deltas).split(anchors_per_level, dim=1)),
    }
    split_anchors = [list(torch.from_numpy(anchors).split(anchors_per_level))] * len(cls_logits)
    return model.postprocess_detections(heads, split_anchors, [tuple(s) for s in image_sizes])


def test_postprocess_matches_torchvision():
    image_hw, k = (256, 320), 7
    cfg = anchor_lib.AnchorConfig.torchvision()
    anchors = np.array(anchor_lib.generate_anchors(image_hw, cfg))
    anchors_per_level = list(anchor_lib.anchors_per_level(image_hw, cfg))
    rng = np.random.default_rng(0)
    cls_logits = rng.normal(-4.0, 1.5, (2, len(anchors), k)).astype(np.float32)
    box_deltas = rng.normal(0.0, 0.3, (2, len(anchors), 4)).astype(np.float32)
    image_sizes = np.array([[256, 320], [200, 290]], np.int32)
    ref = torchvision_postprocess(
        cls_logits, box_deltas, anchors, anchors_per_level, image_sizes, k
    )
    args = (
        cls_logits,
        box_deltas,
        anchors,
        image_sizes,
        tuple(anchors_per_level),
        PostprocessConfig.torchvision(),
    )
    ours = jax.jit(postprocess, static_argnums=(4, 5))(*args)
    for i in range(2):
        n = int(ours['valid'][i].sum())
        assert n == len(ref[i]['scores']) == 300  # the problem fills every slot
        np.testing.assert_allclose(ours['scores'][i][:n], ref[i]['scores'].numpy(), rtol=1e-5)
        np.testing.assert_array_equal(ours['labels'][i][:n], ref[i]['labels'].numpy())
        np.testing.assert_allclose(
            ours['boxes'][i][:n], ref[i]['boxes'].numpy(), rtol=1e-4, atol=1e-3
        )
        assert float(ours['boxes'][i][:n, 2].max()) <= image_sizes[i][1]  # clipped to the image
    # the threshold as a traced argument: one program, torchvision's detections at each
    traced, programs = jax.jit(postprocess, static_argnums=(4, 5)), []
    for p in (0.05, 0.6):
        ref = torchvision_postprocess(
            cls_logits, box_deltas, anchors, anchors_per_level, image_sizes, k, score_thresh=p
        )
        got = traced(*args, np.float32(score_logit(p)))
        for i in range(2):
            n = int(got['valid'][i].sum())
            assert n == len(ref[i]['scores']) and (n == 300) == (p == 0.05), n
            np.testing.assert_allclose(got['scores'][i][:n], ref[i]['scores'].numpy(), rtol=1e-5)
            np.testing.assert_array_equal(got['labels'][i][:n], ref[i]['labels'].numpy())
        if p == 0.05:
            for key in got:
                np.testing.assert_array_equal(got[key], ours[key], err_msg=key)
        programs.append(traced._cache_size())
    assert programs[0] == programs[1]
    few = cls_logits.copy()
    few[1] = -10.0  # nothing above the threshold in image 1
    few[1, 5, 2] = 1.0
    out = jax.jit(postprocess, static_argnums=(4,))(
        few, box_deltas, anchors, image_sizes, tuple(anchors_per_level)
    )
    assert int(out['valid'][1].sum()) == 1 and int(out['labels'][1][0]) == 2
    assert (np.asarray(out['labels'][1][1:]) == -1).all()


def test_no_recompilation_and_vmap_equals_single():
    image_hw, k = (64, 64), 3
    anchors = np.array(anchor_lib.generate_anchors(image_hw))
    sizes = tuple(
        gh * gw * 9 for gh, gw in anchor_lib.level_grid_sizes(image_hw, anchor_lib.AnchorConfig())
    )
    fn = jax.jit(postprocess, static_argnums=(4, 5))
    rng = np.random.default_rng(1)
    results, cache_sizes = [], []
    for _ in range(3):
        logits = rng.normal(-3, 2, (2, len(anchors), k)).astype(np.float32)
        deltas = rng.normal(0, 0.2, (2, len(anchors), 4)).astype(np.float32)
        image_sizes = np.array([[64, 64]] * 2)
        results.append((logits, deltas, fn(logits, deltas, anchors, image_sizes, sizes)))
        cache_sizes.append(fn._cache_size())  # shared by every jit of `postprocess`
    assert cache_sizes[0] == cache_sizes[-1]
    logits, deltas, batched = results[0]
    single = fn(logits[1:], deltas[1:], anchors, np.array([[64, 64]]), sizes)
    for key in batched:
        np.testing.assert_allclose(
            np.asarray(batched[key][1]), np.asarray(single[key][0]), rtol=1e-6
        )


def test_boxes_to_original():
    boxes = jnp.array([[[10.0, 20.0, 30.0, 40.0]]])
    scale = jnp.array([[2.0, 0.5]])  # (sy, sx)
    np.testing.assert_allclose(boxes_to_original(boxes, scale), [[[20, 10, 60, 20]]])


def test_postprocess_with_nothing_above_the_threshold_is_empty():
    anchors = np.asarray(anchor_lib.generate_anchors((64, 64)))
    r = len(anchors)
    dets = jax.jit(
        lambda c, d: postprocess(
            c,
            d,
            anchors,
            jnp.array([[64, 64]]),
            anchor_lib.anchors_per_level((64, 64), anchor_lib.AnchorConfig()),
        )
    )(jnp.full((1, r, 3), -20.0), jnp.zeros((1, r, 4)))
    assert dets['boxes'].shape == (1, 100, 4) and not dets['valid'].any()
    assert (dets['labels'] == -1).all() and (dets['scores'] == 0).all()
