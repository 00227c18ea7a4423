"""Trainable normalisation: batch norm (torch semantics, synchronised under jit) and group
norm in the backbone and FPN, their training and eval modes, freezing, weight import and
checkpoints."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .helpers import require

require('torch', 'torchvision')

import torch
from flax import nnx
from torchvision.models import resnet18

from configs import smoke
from retinanet_jax import checkpoint, settings, sharding
from retinanet_jax.models import ModelConfig, build_retinanet, torchvision_weights
from retinanet_jax.models.layers import BatchNorm, Frozen, FrozenBatchNorm
from retinanet_jax.models.resnet import ResNet
from retinanet_jax.training import state as train_state
from retinanet_jax.training import step as train_step

from .test_models import assert_rel_close, image, nhwc, torchvision_retinanet  # noqa: F401

# The smoke config's model: trainable batch norm in the backbone (the stem and layers 1-3
# frozen, freeze_at=4) and in the FPN; one_train_step(BATCH) is then the smoke run's compiled step.
BATCH = settings.from_config(smoke.get_config()).model


def test_batch_norm_matches_torch_in_training_and_eval_mode():
    rng = np.random.default_rng(0)
    ours, ref = BatchNorm(6), torch.nn.BatchNorm2d(6)  # momentum 0.1, eps 1e-5 on both
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5), ref.bias.uniform_(-0.5, 0.5)
    ours.scale[...], ours.bias[...] = ref.weight.detach().numpy(), ref.bias.detach().numpy()
    for _ in range(3):  # three training steps: outputs and running statistics
        x = rng.normal(2.0, 3.0, (4, 5, 7, 6)).astype(np.float32)
        got = ours(jnp.asarray(x))
        want = ref.train()(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
        np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.mean[...], ref.running_mean, rtol=1e-5)
    np.testing.assert_allclose(ours.var[...], ref.running_var, rtol=1e-5)  # unbiased, as torch
    ours.use_running_average = True
    x = rng.normal(0.0, 1.0, (2, 3, 3, 6)).astype(np.float32)
    want = ref.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    np.testing.assert_allclose(
        ours(jnp.asarray(x)), want.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6
    )


def test_torchvision_retinanet_in_eval_mode_converts_into_batch_norm(image):  # noqa: F811
    """A torchvision R50 RetinaNet with non-trivial BatchNorm statistics (eval()), converted
    into trainable batch norm: its running statistics become batch statistics, its affine terms
    parameters, and in eval mode the outputs are torchvision's."""
    _, reference, state_dict = torchvision_retinanet('v1')
    with torch.no_grad():
        ref = reference.head(list(reference.backbone(image).values()))
    model = torchvision_weights.retinanet_from_torchvision(state_dict, 'v1', norm='batch')
    bn = model.backbone.layer2[0].bn1
    assert isinstance(bn, BatchNorm) and isinstance(bn.scale, nnx.Param)
    np.testing.assert_array_equal(bn.var[...], state_dict['backbone.body.layer2.0.bn1.running_var'])
    assert isinstance(model.backbone.layer1[0].bn1, FrozenBatchNorm)  # freeze_at=2: frozen
    model.eval()
    out = nnx.jit(lambda m, x: m(x))(model, nhwc(image))
    assert_rel_close(out['cls_logits'], ref['cls_logits'], 1e-4)
    assert_rel_close(out['box_deltas'], ref['bbox_regression'], 1e-4)


def test_group_norm_resnet_matches_torchvision():
    torch.manual_seed(0)
    reference = resnet18(norm_layer=lambda c: torch.nn.GroupNorm(32, c)).eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        c2 = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
        c5 = reference.layer4(reference.layer3(reference.layer2(c2)))
    model = build_retinanet(dataclasses.replace(BATCH, norm='group', fpn_norm='group'))
    torchvision_weights.load_resnet_from_torchvision(model, reference.state_dict())
    _, _, ours = nnx.jit(lambda m, x: m.backbone(x))(model, nhwc(x))
    assert_rel_close(ours, c5.numpy().transpose(0, 2, 3, 1), 1e-4)


def one_train_step(config: ModelConfig):
    """(state before, state after) of one train step of the smoke recipe with `config`."""
    c = smoke.get_config()
    c.model.update(dataclasses.asdict(config))
    s = settings.from_config(c)
    mesh = sharding.make_mesh()
    graph, state = train_state.create_state(s, mesh)
    before = jax.tree.map(np.asarray, state)
    from retinanet_jax.data import pipeline
    from retinanet_jax.ops import anchors as anchor_lib

    source, _ = settings.make_sources(s)
    batch = pipeline.train_dataset(source, s.input, 2)[0]
    step = train_step.make_train_step(
        graph, np.asarray(anchor_lib.generate_anchors(s.image_hw, s.anchors)), s, mesh
    )
    after, _ = step(state, sharding.to_global(batch, mesh))
    return s, graph, before, after


def test_train_step_updates_statistics_except_in_frozen_stages(tmp_path):
    _, graph, before, after = one_train_step(BATCH)
    flat_before = dict(nnx.to_flat_state(before['model']))
    flat_after = dict(nnx.to_flat_state(after['model']))
    stats = [p for p, v in flat_before.items() if isinstance(v, nnx.BatchStat)]
    assert stats
    for path in stats:
        same = np.array_equal(flat_before[path][...], np.asarray(flat_after[path][...]))
        frozen_stage = path[0] == 'backbone' and path[1] != 'layer4'
        assert same == frozen_stage, path  # freeze_at=4: the stem and layers 1-3 keep theirs
    frozen = [p for p, v in flat_before.items() if isinstance(v, Frozen)]
    assert all(np.array_equal(flat_before[p][...], np.asarray(flat_after[p][...])) for p in frozen)
    assert any(p[1] == 'layer4' for p in stats) and any(p[0] == 'fpn' for p in stats)

    # Eval mode uses the running statistics: the predict graph gives an image the same outputs
    # whatever the other images of its batch (training mode's batch statistics would not).
    model = nnx.merge(graph.eval_model, after['model'])
    logits = nnx.jit(lambda m, x: m(x)['cls_logits'])
    x = jax.random.normal(jax.random.key(0), (3, 64, 64, 3))
    others = x.at[1:].set(jax.random.normal(jax.random.key(1), (2, 64, 64, 3)) * 3.0)
    np.testing.assert_allclose(logits(model, others)[0], logits(model, x)[0], rtol=1e-4, atol=1e-5)
    train_mode = nnx.merge(graph.model, after['model'])
    assert not np.allclose(logits(train_mode, others)[0], logits(train_mode, x)[0], atol=1e-3)

    # The statistics go through a checkpoint and come back exactly.
    with checkpoint.run_checkpoints(tmp_path, keep=1) as manager:
        checkpoint.save_run(manager, 1, after, None)
        restored, step = checkpoint.restore_run(manager, train_state.abstract_state(after))
    assert step == 1
    for path in stats:
        np.testing.assert_array_equal(
            dict(nnx.to_flat_state(restored['model']))[path][...], flat_after[path][...]
        )


def test_group_norm_has_no_statistics_and_its_affine_terms_train():
    model = build_retinanet(dataclasses.replace(BATCH, norm='group', fpn_norm='group'))
    assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    grads = nnx.jit(
        nnx.grad(lambda m: jnp.mean(m(x)['cls_logits'] ** 2), argnums=nnx.DiffState(0, nnx.Param))
    )(model)
    assert np.abs(grads['backbone']['layer4'][0]['bn1']['scale'][...]).sum() > 0
    assert np.abs(grads['fpn']['inner_norms'][0]['bias'][...]).sum() > 0
    paths = {path for path, _ in nnx.to_flat_state(grads)}
    assert ('backbone', 'layer3', 0, 'bn1', 'scale') not in paths  # frozen (freeze_at=4)


@pytest.mark.parametrize(
    'change, message',
    [
        ({'norm': 'bn'}, r"config\.model\.norm must be one of \('frozen', 'batch', 'group'\)"),
        ({'fpn_norm': 'layer'}, r'config\.model\.fpn_norm must be one of'),
        ({'fpn_norm': 'group', 'fpn_width': 48, 'head_group_norm': False},
         r'config\.model\.fpn_norm uses GroupNorm with 32 groups: fpn_width must be a multiple'),
        ({'head_group_norm': True, 'fpn_width': 40}, r'config\.model\.head_group_norm uses'),
    ],
)  # fmt: skip
def test_bad_norm_settings_name_the_config_key(change, message):
    c = smoke.get_config()
    c.model.update(change)
    with pytest.raises(ValueError, match=message):
        settings.from_config(c)


def test_resnet_stages_freeze_norms_with_kernels():
    net = nnx.eval_shape(lambda: ResNet(18, freeze_at=3, norm='group', rngs=nnx.Rngs(0)))
    assert isinstance(net.layer2[0].bn1.scale, Frozen) and isinstance(net.bn1.scale, Frozen)
    assert isinstance(net.layer3[0].bn1.scale, nnx.Param)
    net = nnx.eval_shape(lambda: ResNet(18, freeze_at=3, norm='batch', rngs=nnx.Rngs(0)))
    assert isinstance(net.layer2[1].bn2, FrozenBatchNorm) and isinstance(
        net.layer3[0].bn1, BatchNorm
    )
