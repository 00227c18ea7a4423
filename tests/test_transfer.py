"""Fine-tuning a pretrained detector (models/transfer.py, config.init.detector): every tensor
whose name and shape match is loaded; the class layer of another class count keeps its fresh
initialisation (the prior bias) but for the rows of classes named on both sides; what was not
loaded is named."""

import numpy as np
import pytest
from flax import nnx

from retinanet_jax.models import ModelConfig, build_retinanet
from retinanet_jax.models.heads import class_prior_bias
from retinanet_jax.models.transfer import transfer

from .helpers import require

SMALL = dict(depth=18, fpn_width=32, head_depth=1)


def flat(model) -> dict:
    return {
        '.'.join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))
    }


def test_matching_tensors_load_and_shared_classes_keep_their_rows():
    source = build_retinanet(ModelConfig(num_classes=5, **SMALL), seed=1)
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
    # no names in common, or none known: the class layer stays fresh, and says so
    target = build_retinanet(ModelConfig(num_classes=3, **SMALL), seed=2)
    not_loaded = transfer(target, source, None, ('c', 'a', 'z'))
    assert any('shape (3, 3, 32, 45) in the source, (3, 3, 32, 27) here' in n for n in not_loaded)
    np.testing.assert_array_equal(flat(target)[f'{out}.bias'], fresh[f'{out}.bias'])


@pytest.mark.slow
def test_a_torchvision_coco_detector_fine_tunes_into_three_classes(tmp_path, capsys):
    """A torchvision retinanet_resnet50_fpn state dict (random weights, 91 classes) into a
    3-class R50 train state through config.init.detector's loader: matched tensors equal, the
    class layer at the prior bias, one line naming what was not loaded; COCO names keep their
    rows."""
    require('torch', 'torchvision')
    import jax
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn

    from retinanet_jax import sharding
    from retinanet_jax.training import state as train_state

    torch.manual_seed(0)
    torch.save(
        retinanet_resnet50_fpn(weights=None, weights_backbone=None).state_dict(),
        tmp_path / 'r50.pth',
    )
    mesh = sharding.make_mesh()
    config = ModelConfig.torchvision_v1(3)
    graph_model = nnx.graphdef(nnx.eval_shape(lambda: build_retinanet(config)))
    graph = type('Graph', (), {'model': graph_model})
    out = 'classification_head.output'
    built = build_retinanet(config)
    fresh = flat(built)
    for names, kept in ((('cat', 'boat', 'zebra'), True), (('tumour', 'cell', 'nucleus'), False)):
        model = nnx.clone(built)
        state = {'model': nnx.state(model)}
        loaded = train_state.init_detector(graph, state, str(tmp_path / 'r50.pth'), mesh, names)
        line = capsys.readouterr().out.strip()
        assert line.count('\n') == 0 and f'{out}.kernel' in line and f'{out}.bias' in line
        params = {
            '.'.join(map(str, p)): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(loaded['model']))
            for p in [tuple(getattr(k, 'key', getattr(k, 'idx', k)) for k in p)]
        }
        source = torch.load(tmp_path / 'r50.pth')
        np.testing.assert_array_equal(
            params['backbone.conv1.kernel'],
            source['backbone.body.conv1.weight'].numpy().transpose(2, 3, 1, 0),
        )
        bias = params[f'{out}.bias'].reshape(9, 3)
        if kept:  # COCO's cat, boat and zebra are torchvision labels 17, 9 and 24
            np.testing.assert_array_equal(
                bias,
                source['head.classification_head.cls_logits.bias']
                .numpy()
                .reshape(9, 91)[:, [17, 9, 24]],
            )
        else:
            np.testing.assert_allclose(bias, class_prior_bias(0.01), rtol=1e-6)
            np.testing.assert_array_equal(params[f'{out}.kernel'], fresh[f'{out}.kernel'])
