"""Fine-tuning a pretrained detector (models/transfer.py, config.init.detector): every tensor
whose name and shape match is loaded; the class layer of another class count keeps its fresh
initialisation (the prior bias) but for the rows of classes named on both sides; what was not
loaded is named."""

import jax
import numpy as np
import pytest
from flax import nnx

from retinanet_jax.models import ModelConfig, build_retinanet
from retinanet_jax.models.heads import class_prior_bias
from retinanet_jax.models.transfer import transfer

from .helpers import require

SMALL = dict(depth=18, fpn_width=32, head_depth=2)  # the 3-class one: test_models' SMALL


def donor(config: ModelConfig, seed: int):
    """A model of `config` with random normal weights, built without compiling its
    initialisation: a source of weights to transfer (its values only need to differ)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_retinanet(config)))
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda a: jax.numpy.asarray(rng.standard_normal(a.shape), a.dtype), state)
    return nnx.merge(graphdef, state)


def flat(model) -> dict:
    return {
        '.'.join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))
    }


def test_matching_tensors_load_and_shared_classes_keep_their_rows():
    source = donor(ModelConfig(num_classes=5, **SMALL), seed=1)
    target = build_retinanet(ModelConfig(num_classes=3, **SMALL), seed=2)
    fresh, before = flat(target), flat(source)
    not_loaded = transfer(target, source, ('a', 'b', 'c', 'd', 'e'), ('c', 'a', 'z'))
    after = flat(target)
    out = 'classification_head.output'
    assert sorted(n.split(':')[0] for n in not_loaded) == [f'{out}.bias', f'{out}.kernel']
    assert all('the rows of c, a only' in n for n in not_loaded)
    for name, value in after.items():
        if not name.startswith(out):
            np.testing.assert_array_equal(value, before[name], err_msg=name)
    for leaf in ('kernel', 'bias'):
        got, src, new = after[f'{out}.{leaf}'], before[f'{out}.{leaf}'], fresh[f'{out}.{leaf}']
        for a in range(9):  # channel a * K + k: anchor a, class k
            np.testing.assert_array_equal(got[..., a * 3 + 0], src[..., a * 5 + 2])  # c
            np.testing.assert_array_equal(got[..., a * 3 + 1], src[..., a * 5 + 0])  # a
            np.testing.assert_array_equal(got[..., a * 3 + 2], new[..., a * 3 + 2])  # z: fresh
    np.testing.assert_allclose(after[f'{out}.bias'][2::3], class_prior_bias(0.01), rtol=1e-6)
    # the same classes in another order: the rows follow the names
    same = donor(ModelConfig(num_classes=5, **SMALL), seed=3)
    transfer(same, source, ('a', 'b', 'c', 'd', 'e'), ('e', 'd', 'c', 'b', 'a'))
    kernel = flat(same)[f'{out}.kernel']
    np.testing.assert_array_equal(kernel[..., 0], before[f'{out}.kernel'][..., 4])
    # no names in common, or none known: the class layer stays fresh, and says so
    target = build_retinanet(ModelConfig(num_classes=3, **SMALL), seed=2)
    not_loaded = transfer(target, source, None, ('c', 'a', 'z'))
    assert any('shape (3, 3, 32, 45) in the source, (3, 3, 32, 27) here' in n for n in not_loaded)
    np.testing.assert_array_equal(flat(target)[f'{out}.bias'], fresh[f'{out}.bias'])


def test_init_detector_loads_a_model_directory_into_a_train_state_with_one_line(tmp_path, capsys):
    """config.init.detector's step (training.state.init_detector) on a model directory: the
    matched tensors in the train state, the EMA restarted from them, one line naming the rest."""
    from retinanet_jax import checkpoint, sharding
    from retinanet_jax.training import state as train_state

    source = donor(ModelConfig(num_classes=5, **SMALL), seed=1)
    checkpoint.save_model(tmp_path / 'model', source, ModelConfig(num_classes=5, **SMALL))
    target = build_retinanet(ModelConfig(num_classes=3, **SMALL), seed=2)
    graph = type('Graph', (), {'model': nnx.graphdef(target)})
    state = {'model': nnx.state(target), 'ema': nnx.state(target)}
    mesh = sharding.make_mesh()
    loaded = train_state.init_detector(graph, state, str(tmp_path / 'model'), mesh, ('a', 'b', 'c'))
    line = capsys.readouterr().out.strip()
    assert line.count('\n') == 0 and line.startswith(f'detector initialised from {tmp_path}')
    assert 'classification_head.output.kernel: shape (3, 3, 32, 45) in the source' in line
    got = jax.tree.map(np.asarray, nnx.to_pure_dict(loaded['model']))
    ema = jax.tree.map(np.asarray, nnx.to_pure_dict(loaded['ema']))
    want = nnx.to_pure_dict(nnx.state(source))
    np.testing.assert_array_equal(got['fpn']['p6']['kernel'], want['fpn']['p6']['kernel'])
    np.testing.assert_array_equal(ema['fpn']['p6']['kernel'], want['fpn']['p6']['kernel'])


@pytest.mark.slow
def test_a_torchvision_coco_detector_fine_tunes_into_three_classes(tmp_path):
    """A torchvision retinanet_resnet50_fpn state dict (random weights, 91 classes) into a
    3-class R50 (config.init.detector's loader): matched tensors equal, the class layer left as
    it was, or with COCO's names, their rows. The target's weights are random (a donor: every
    matched tensor must be overwritten) rather than initialised, which would compile the R50's
    initialisation (~7 s): that the fresh class layer holds the prior bias is the small
    models' test above, through the same heads."""
    require('torch', 'torchvision')
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn

    from retinanet_jax.inference import loading

    torch.manual_seed(0)
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    torch.save(reference, tmp_path / 'r50.pth')
    source, names = loading.load_detector(tmp_path / 'r50.pth')
    assert len(names) == 91 and names[17] == 'cat'
    built = donor(ModelConfig.torchvision_v1(3), seed=4)
    fresh = flat(built)
    out = 'classification_head.output'
    for target_names, kept in ((('cat', 'boat', 'zebra'), True), (('cell', 'nucleus', 'x'), False)):
        model = nnx.clone(built)
        not_loaded = transfer(model, source, names, target_names)
        assert [n.split(':')[0] for n in not_loaded] == [f'{out}.bias', f'{out}.kernel']
        params = flat(model)
        np.testing.assert_array_equal(
            params['backbone.conv1.kernel'],
            reference['backbone.body.conv1.weight'].numpy().transpose(2, 3, 1, 0),
        )
        np.testing.assert_array_equal(
            params['fpn.p6.kernel'],
            reference['backbone.fpn.extra_blocks.p6.weight'].numpy().transpose(2, 3, 1, 0),
        )
        bias = params[f'{out}.bias'].reshape(9, 3)
        if kept:  # COCO's cat, boat and zebra are torchvision labels 17, 9 and 24
            tv_bias = reference['head.classification_head.cls_logits.bias'].numpy()
            np.testing.assert_array_equal(bias, tv_bias.reshape(9, 91)[:, [17, 9, 24]])
        else:
            np.testing.assert_array_equal(params[f'{out}.bias'], fresh[f'{out}.bias'])
            np.testing.assert_array_equal(params[f'{out}.kernel'], fresh[f'{out}.kernel'])
