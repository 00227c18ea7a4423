import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from .helpers import require

require('torch', 'torchvision')

import torch
from flax import nnx
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2
from torchvision.ops.misc import FrozenBatchNorm2d

from retinanet_jax import checkpoint
from retinanet_jax.models import ModelConfig, build_retinanet, layers, torchvision_weights
from retinanet_jax.models.fpn import upsample_nearest
from retinanet_jax.models.layers import Frozen
from retinanet_jax.models.resnet import ResNet
from retinanet_jax.ops import anchors as anchor_lib

SMALL = ModelConfig(num_classes=3, depth=18, fpn_width=32, head_depth=2)


def param_count(model, *types):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, *types)))


def randomise_batch_norm(model: torch.nn.Module) -> None:
    """Random statistics and affine terms, so that frozen BN is not an identity in parity tests."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d):
                for name, (lo, hi) in [
                    ('running_mean', (-0.5, 0.5)),
                    ('running_var', (0.5, 2.0)),
                    ('weight', (0.5, 1.5)),
                    ('bias', (-0.5, 0.5)),
                ]:
                    t = getattr(m, name)
                    t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)


def nhwc(x: torch.Tensor) -> jax.Array:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def assert_rel_close(got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= tol, f'max relative error {err:.2e} > {tol:.0e}'


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize('depth', [18, 34, 50, 101, 152])
def test_resnet_feature_shapes_every_depth(depth):
    c3, c4, c5 = nnx.eval_shape(
        lambda: ResNet(depth, rngs=nnx.Rngs(0))(jnp.zeros((2, 100, 150, 3)))
    )
    channels = (128, 256, 512) if depth < 50 else (512, 1024, 2048)
    assert c3.shape == (2, 13, 19, channels[0])
    assert c4.shape == (2, 7, 10, channels[1])
    assert c5.shape == (2, 4, 5, channels[2])


@pytest.mark.parametrize('p6_from', ['c5', 'p5'])
@pytest.mark.parametrize('image_hw', [(100, 150), (64, 64), (97, 33), (416, 416), (800, 1216)])
def test_outputs_align_with_anchors(image_hw, p6_from):
    config = dataclasses.replace(SMALL, p6_from=p6_from)
    out = nnx.eval_shape(lambda: build_retinanet(config)(jnp.zeros((2, *image_hw, 3))))
    r = anchor_lib.num_anchors(image_hw, anchor_lib.AnchorConfig())
    assert out['cls_logits'].shape == (2, r, 3) and out['cls_logits'].dtype == jnp.float32
    assert out['box_deltas'].shape == (2, r, 4)


@pytest.mark.parametrize('src, dst', [((4, 5), (7, 10)), ((2, 3), (4, 6)), ((3, 3), (5, 6))])
def test_upsample_nearest_matches_torch(src, dst):
    x = torch.randn(1, 2, *src)
    ref = torch.nn.functional.interpolate(x, size=dst, mode='nearest')
    np.testing.assert_array_equal(upsample_nearest(nhwc(x), dst), ref.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize('stride', [1, 2])
def test_one_by_one_convolutions_as_products_match_xla_convolutions(stride):
    """layers.conv_general_dilated runs float32 1x1 convolutions as [N*H*W, C] @ [C, D]: the
    same values and input and kernel gradients as lax's convolution."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 5, 8)), jnp.float32)
    k = jnp.asarray(np.random.default_rng(1).normal(size=(1, 1, 8, 16)), jnp.float32)
    dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, ('NHWC', 'HWIO', 'NHWC'))

    def loss(conv):
        return lambda x, k: jnp.sum(
            jnp.sin(conv(x, k, (stride, stride), [(0, 0), (0, 0)], dimension_numbers=dn))
        )

    ours, ref = loss(layers.conv_general_dilated), loss(jax.lax.conv_general_dilated)
    np.testing.assert_allclose(ours(x, k), ref(x, k), rtol=1e-5)
    for got, want in zip(
        jax.jit(jax.grad(ours, (0, 1)))(x, k), jax.grad(ref, (0, 1))(x, k), strict=True
    ):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- torchvision parity


@pytest.fixture(scope='module')
def image():
    return torch.randn(2, 3, 256, 320, generator=torch.Generator().manual_seed(1))


@functools.cache
def torchvision_retinanet(variant: str):
    """A randomly initialised torchvision RetinaNet (eval mode, random BN) and its state dict."""
    builder = retinanet_resnet50_fpn if variant == 'v1' else retinanet_resnet50_fpn_v2
    torch.manual_seed(0)
    reference = builder(weights=None, weights_backbone=None).eval()
    randomise_batch_norm(reference)
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
    return variant, reference, state_dict


@pytest.fixture(params=['v1', 'v2'])
def torchvision_pair(request):
    return torchvision_retinanet(request.param)


def test_head_outputs_match_torchvision(torchvision_pair, image):
    variant, reference, state_dict = torchvision_pair
    with torch.no_grad():
        ref = reference.head(list(reference.backbone(image).values()))
    model = torchvision_weights.retinanet_from_torchvision(state_dict, variant)
    out = nnx.jit(lambda m, x: m(x))(model, nhwc(image))
    assert_rel_close(out['cls_logits'], ref['cls_logits'], 1e-4)
    assert_rel_close(out['box_deltas'], ref['bbox_regression'], 1e-4)
    if variant == 'v1':  # bf16 compute, float32 parameters
        bf16 = torchvision_weights.retinanet_from_torchvision(state_dict, variant, dtype='bfloat16')
        out16 = nnx.jit(lambda m, x: m(x))(bf16, nhwc(image))
        assert out16['cls_logits'].dtype == jnp.float32
        assert_rel_close(out16['cls_logits'], out['cls_logits'], 2e-2)
        assert_rel_close(out16['box_deltas'], out['box_deltas'], 2e-2)


def test_parameter_counts_match_torchvision(torchvision_pair):
    variant, reference, _ = torchvision_pair
    preset = ModelConfig.torchvision_v1 if variant == 'v1' else ModelConfig.torchvision_v2
    model = nnx.eval_shape(lambda: build_retinanet(preset(91)))
    # torchvision's weights=None models use BatchNorm2d, whose affine terms are parameters:
    # ours are Frozen (counted), running statistics are BatchStat (not counted).
    assert param_count(model, nnx.Param, Frozen) == sum(p.numel() for p in reference.parameters())
    assert param_count(model, nnx.Param, Frozen) == {'v1': 34_068_119, 'v2': 38_198_935}[variant]


def test_resnet50_features_match_torchvision_frozen_bn(image):
    torch.manual_seed(0)
    reference = resnet50(norm_layer=FrozenBatchNorm2d).eval()
    randomise_batch_norm(reference)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))
        c2 = reference.layer1(x)
        c3 = reference.layer2(c2)
        c4 = reference.layer3(c3)
        c5 = reference.layer4(c4)
    model = nnx.eval_shape(lambda: build_retinanet(ModelConfig(num_classes=91)))
    torchvision_weights.load_resnet_from_torchvision(model, reference.state_dict())  # includes fc.*
    ours = nnx.jit(lambda b, x: b(x))(model.backbone, nhwc(image))
    for got, want in zip(ours, (c3, c4, c5), strict=True):
        assert_rel_close(got, want.numpy().transpose(0, 2, 3, 1), 1e-4)


# ---------------------------------------------------------------- initialisation and freezing


forward = nnx.jit(lambda model, x: model(x))  # compiled once per shape, not op by op


@pytest.fixture(scope='module')
def small_model():
    return build_retinanet(SMALL)


def test_class_bias_prior(small_model):
    np.testing.assert_allclose(
        small_model.classification_head.output.bias[...], -np.log(99), rtol=1e-6
    )
    np.testing.assert_array_equal(small_model.regression_head.output.bias[...], 0.0)
    out = forward(small_model, jnp.zeros((1, 64, 64, 3)))
    np.testing.assert_allclose(jax.nn.sigmoid(out['cls_logits']).mean(), 0.01, rtol=0.2)


def test_frozen_parameters_receive_no_update(small_model):
    model = nnx.clone(small_model)

    def snapshot():
        return {path: np.array(v[...]) for path, v in nnx.to_flat_state(nnx.state(model))}

    before = snapshot()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    def loss_fn(m):
        out = m(jnp.ones((1, 64, 64, 3)))
        return jnp.mean(out['cls_logits'] ** 2) + jnp.mean(out['box_deltas'] ** 2)

    grads = nnx.jit(nnx.grad(loss_fn, argnums=nnx.DiffState(0, nnx.Param)))(model)
    optimizer.update(model, grads)
    after = snapshot()
    frozen_paths = {
        p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Any(Frozen, nnx.BatchStat)))
    }
    assert any(p[:2] == ('backbone', 'conv1') for p in frozen_paths)  # freeze_at=2: the stem
    assert any(p[:2] == ('backbone', 'layer1') and p[-1] == 'kernel' for p in frozen_paths)
    assert not any(p[:2] == ('backbone', 'layer2') and p[-1] == 'kernel' for p in frozen_paths)
    changed = 0
    for path, value in before.items():
        same = np.array_equal(value, after[path])
        if path in frozen_paths:
            assert same, path
        elif path[0] != 'backbone' or path[1] != 'layer1':
            changed += not same
    assert changed > 10


# ---------------------------------------------------------------- bad input


def test_bad_images_are_rejected(small_model):
    with pytest.raises(ValueError, match=r'\[B, H, W, 3\]'):
        small_model(jnp.zeros((1, 3, 64, 64)))
    with pytest.raises(ValueError, match='floating-point'):
        small_model(jnp.zeros((1, 64, 64, 3), jnp.uint8))


def test_bad_state_dicts_list_offending_keys():
    _, _, state_dict = torchvision_retinanet('v1')
    other = {f'backbone.body.{k}': v.numpy() for k, v in resnet18().state_dict().items()}
    other.update({k: v for k, v in state_dict.items() if not k.startswith('backbone.body.')})
    with pytest.raises(ValueError, match=r'wrong shapes .*layer1\.0\.conv1\.weight'):
        torchvision_weights.retinanet_from_torchvision(other, 'v1')
    missing = dict(state_dict)
    del missing['backbone.fpn.extra_blocks.p7.bias']
    with pytest.raises(ValueError, match=r'missing .*extra_blocks\.p7\.bias'):
        torchvision_weights.retinanet_from_torchvision(missing, 'v1')
    # v1 into v2: P6 reads P5 (256 channels) instead of C5 (2048); v2 heads have GroupNorm.
    with pytest.raises(ValueError, match=r'wrong shapes .*extra_blocks\.p6\.weight'):
        torchvision_weights.retinanet_from_torchvision(state_dict, 'v2')
    with pytest.raises(ValueError, match='not a torchvision RetinaNet'):
        torchvision_weights.retinanet_from_torchvision(resnet18().state_dict(), 'v1')


def test_other_class_count_loads_the_rest(torchvision_pair, caplog):
    variant, _, state_dict = torchvision_pair
    with caplog.at_level(logging.WARNING):
        model = torchvision_weights.retinanet_from_torchvision(state_dict, variant, num_classes=5)
    assert 'cls_logits' in caplog.text
    assert model.classification_head.output.kernel.shape == (3, 3, 256, 45)
    np.testing.assert_allclose(model.classification_head.output.bias[...], -np.log(99), rtol=1e-6)
    np.testing.assert_array_equal(
        model.regression_head.output.bias[...], state_dict['head.regression_head.bbox_reg.bias']
    )


def test_state_dict_file_formats(tmp_path):
    sd = resnet18().state_dict()
    arrays = {k: v.numpy() for k, v in sd.items()}
    torch.save(sd, tmp_path / 'a.pth')
    torch.save({'model': sd}, tmp_path / 'wrapped.pth')
    np.savez(tmp_path / 'a.npz', **arrays)
    require('safetensors')
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp_path / 'a.safetensors')
    for name in ('a.pth', 'wrapped.pth', 'a.npz', 'a.safetensors'):
        loaded = torchvision_weights.load_state_dict(tmp_path / name)
        assert loaded.keys() == arrays.keys(), name
        np.testing.assert_array_equal(
            loaded['layer1.0.conv1.weight'], arrays['layer1.0.conv1.weight']
        )
    (tmp_path / 'bad.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match=r'bad\.pth'):
        torchvision_weights.load_state_dict(tmp_path / 'bad.pth')
    (tmp_path / 'x.h5').write_bytes(b'')
    with pytest.raises(ValueError, match='unknown state-dict format'):
        torchvision_weights.load_state_dict(tmp_path / 'x.h5')
    with pytest.raises(FileNotFoundError, match=r'nope\.pth'):
        torchvision_weights.load_state_dict(tmp_path / 'nope.pth')


def test_save_and_load_model_round_trip(tmp_path, small_model):
    directory = checkpoint.save_model(tmp_path / 'm', small_model, SMALL)
    restored, config = checkpoint.load_model(directory)
    assert config == SMALL
    x = jnp.ones((1, 64, 64, 3))
    jax.tree.map(np.testing.assert_array_equal, forward(restored, x), forward(small_model, x))
    with pytest.raises(FileExistsError):
        checkpoint.save_model(directory, small_model, SMALL)
    (directory / 'model_config.json').write_text('{"num_classes": 7, "depth": 18, "fpn_width": 32}')
    with pytest.raises(ValueError, match='does not match'):
        checkpoint.load_model(directory)


# The convert command line: tests/test_train.py::test_predict_and_evaluate_torchvision_weights.


def test_stem_max_pool_and_its_gradient_match_xla_and_torch():
    from retinanet_jax.models.layers import max_pool_3x3_s2

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 12, 5)).astype(np.float32)
    x[0, 2, 2, 0] = x[0, 2, 3, 0] = 9.0  # a tie: the window's first maximum gets the gradient
    reference = torch.nn.functional.max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 3, 2, 1)
    np.testing.assert_array_equal(max_pool_3x3_s2(x), reference.numpy().transpose(0, 2, 3, 1))
    g = rng.normal(size=reference.shape).astype(np.float32).transpose(0, 2, 3, 1)

    def xla(x):
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    ours = jax.vjp(max_pool_3x3_s2, jnp.asarray(x))[1](g)[0]
    want = jax.vjp(xla, jnp.asarray(x))[1](g)[0]
    np.testing.assert_allclose(ours, want, atol=1e-6)  # ties included: XLA's choice
