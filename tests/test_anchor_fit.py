"""anchor_fit: the best IoU per box against the brute force over every anchor, the input scale
against the evaluation pipeline's, coverage on hand-made boxes, and the report on the shapes
demo: starting from the paper's anchors it proposes the demo's hand-chosen 16-256."""

import dataclasses
import shlex

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import shapes
from retinanet_jax import settings as settings_lib
from retinanet_jax.commands import anchors as anchors_command
from retinanet_jax.data import summary
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.evaluation import anchor_fit
from retinanet_jax.ops.anchors import AnchorConfig, generate_anchors
from retinanet_jax.ops.matching import MatcherConfig


def brute_best_iou(boxes, image_hw, config):
    a = generate_anchors(image_hw, config).astype(np.float64)
    ix = np.minimum(boxes[:, None, 2], a[None, :, 2]) - np.maximum(boxes[:, None, 0], a[None, :, 0])
    iy = np.minimum(boxes[:, None, 3], a[None, :, 3]) - np.maximum(boxes[:, None, 1], a[None, :, 1])
    inter = np.maximum(ix, 0) * np.maximum(iy, 0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    anchor_area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    return (inter / (area[:, None] + anchor_area[None] - inter)).max(axis=1)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    preset=st.sampled_from(['paper', 'torchvision']),
    first=st.sampled_from([8.0, 16.0, 24.0, 32.0]),
    offset=st.sampled_from([0.0, 0.25, 0.5]),
    ratios=st.sampled_from([(1.0,), (0.5, 1.0, 2.0), (0.4, 1.3)]),
    image_hw=st.sampled_from([(128, 128), (96, 200), (256, 384)]),
)
def test_best_iou_equals_the_brute_force_over_every_anchor(
    seed, preset, first, offset, ratios, image_hw
):
    config = dataclasses.replace(
        getattr(AnchorConfig, preset)(),
        sizes=tuple(first * 2**i for i in range(5)),
        offset=offset,
        aspect_ratios=ratios,
    )
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-30, max(image_hw) + 10, (200, 2))
    wh = rng.uniform(1, 300, (200, 2)) * rng.uniform(0.2, 1, (200, 1))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    np.testing.assert_allclose(
        anchor_fit.best_iou(boxes, image_hw, config),
        brute_best_iou(boxes, image_hw, config),
        atol=2e-6,
    )
    assert anchor_fit.best_iou(np.zeros((0, 4)), image_hw, config).shape == (0,)


@pytest.mark.parametrize('hw', [(480, 640), (333, 500), (128, 128), (1000, 90)])
@pytest.mark.parametrize('resize', ['keep_aspect', 'square'])
def test_input_scale_is_the_evaluation_pipelines(hw, resize):
    from retinanet_jax.data import pipeline

    config = InputConfig(image_size=(256, 256), resize=resize, short_side=200, max_side=256)
    want = pipeline.preprocess_image(np.zeros((*hw, 3), np.uint8), config)['scale']
    assert summary.input_scale(*hw, config) == pytest.approx(tuple(want), abs=1e-6)


def test_coverage_of_hand_made_boxes():
    config = AnchorConfig()  # 32-512, offset 0.5: a 32x32 anchor centred at (4, 4)
    matcher = MatcherConfig()
    boxes = np.asarray(
        [
            [-12.0, -12.0, 20.0, 20.0],  # exactly an anchor: IoU 1
            [100.0, 100.0, 108.0, 108.0],  # 8x8: at best 64 / 1024 of a 32x32 anchor
            [40.0, 40.0, 140.0, 140.0],  # 100 px
        ]
    )
    best = anchor_fit.best_iou(boxes, (256, 256), config)
    assert best[0] == pytest.approx(1.0)
    assert best[1] == pytest.approx(64 / 1024)
    report = anchor_fit.coverage(boxes, best, matcher)
    rows = {r['range']: r for r in report['rows']}
    assert rows['0-16']['boxes'] == 1 and rows['0-16']['positive'] == 0.0
    assert rows['32-64']['positive'] == 1.0 and rows['all']['boxes'] == 3
    assert report['low_quality_only'] == 1
    np.testing.assert_array_equal(report['low_quality_boxes'], boxes[1:2])


def test_on_shapes_the_paper_anchors_lead_to_the_demos_hand_chosen_ones(capsys):
    config = shapes.get_config()
    config.data.options = {'image_size': 128, 'sizes': {'train': 300, 'validation': 10}}
    demo = settings_lib.from_config(config)
    config.anchors.sizes = (32.0, 64.0, 128.0, 256.0, 512.0)  # the paper's
    paper = settings_lib.from_config(config)
    report = anchor_fit.report(paper, max_images=300)
    proposed = report['proposed']['anchors']
    assert proposed.sizes == demo.anchors.sizes == (16.0, 32.0, 64.0, 128.0, 256.0)
    assert proposed.num_anchors_per_location == 9
    assert report['proposed']['score'] > report['current']['score']
    # the demo's own anchors are as good as anything tried from them
    demo_report = anchor_fit.report(demo, max_images=300)
    assert demo_report['proposed']['score'] >= demo_report['current']['score']
    assert demo_report['current']['score'][0] >= 0.98 > report['current']['score'][0]

    anchors_command.report(config, None, 300, None)  # the command's text, pasted back in
    text = capsys.readouterr().out
    snippet = text.split('(get_config):\n')[1].splitlines()[0].strip()
    assert snippet.startswith('c.anchors = ml_collections.ConfigDict(')
    import ml_collections

    namespace = {'c': config, 'ml_collections': ml_collections}
    exec(snippet, namespace)
    assert settings_lib.from_config(namespace['c']).anchors == proposed
    # the flags offered give the same anchors on the demo's config file
    from absl import flags
    from ml_collections import config_flags

    argv = ['anchors', f'--config={shapes.__file__}', *shlex.split(text.split('command line: ')[1])]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file('config', flag_values=fv, sys_argv=argv)
    fv(argv)
    assert settings_lib.from_config(fv.config).anchors == proposed
