"""settings.py: presets with changes, unknown keys and inconsistent configs refused, naming the
key."""

import dataclasses
import os

import pytest

from configs import smoke
from retinanet_jax import settings
from retinanet_jax.training import trainer


def test_presets_take_changes_and_refuse_unknown_keys():
    from retinanet_jax.ops.anchors import AnchorConfig
    from retinanet_jax.ops.losses import LossConfig

    config = smoke.get_config().to_dict()  # plain dicts: the preset fields change type
    config['anchors'] = {'preset': 'paper', 'sizes': (16.0, 32.0, 64.0, 128.0, 256.0)}
    config['loss'] = {'preset': 'torchvision', 'box_loss': 'giou'}
    s = settings.from_config(config)
    assert s.anchors == dataclasses.replace(
        AnchorConfig.paper(), sizes=(16.0, 32.0, 64.0, 128.0, 256.0)
    )
    assert s.loss == dataclasses.replace(LossConfig.torchvision(), box_loss='giou')
    config['anchors'] = {'preset': 'paper', 'size': 16}
    with pytest.raises(ValueError, match=r"config\.anchors has unknown keys \['size'\]"):
        settings.from_config(config)
    config['anchors'] = {'preset': 'paper', 'aspect_ratios': (1.0,)}
    with pytest.raises(
        ValueError, match=r'3 anchors per location .* config\.model\.num_anchors is 9'
    ):
        settings.from_config(config)
    config['anchors'] = {'preset': 'yolo'}
    with pytest.raises(ValueError, match=r'config\.anchors must be one of'):
        settings.from_config(config)


def test_bad_configs_say_why(tmp_path):
    config = smoke.get_config()
    config.model.num_classes = 5
    with pytest.raises(ValueError, match='num_classes is 5 but dataset'):
        trainer.train_and_evaluate(config, str(tmp_path))
    config = smoke.get_config()
    config.model.fpn_width = 16
    with pytest.raises(ValueError, match='fpn_width must be a multiple of 32'):
        trainer.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize(
    'changes, message',
    [
        ({'read_workers': -2}, 'read_workers must be an integer >= -1, got -2'),
        ({'read_threads': -3}, 'read_threads must be an integer >= 0, got -3'),
        (
            {'read_workers': 2, 'on_bad_record': 'skip'},
            "read_workers > 0 needs on_bad_record='stop'",
        ),
    ],
)
def test_input_readers_are_checked(changes, message):
    config = smoke.get_config()
    for key, value in changes.items():
        config.data[key] = value
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace('.', r'\.')):
        settings.from_config(config)
    data = settings.from_config(smoke.get_config()).data  # keys in the config
    assert data.read_workers == -1  # auto: threads on a CPU, a worker per core on a GPU
    assert data.workers_for('cpu') == 0
    assert data.workers_for('gpu') == len(os.sched_getaffinity(0)) >= 1
    skip = dataclasses.replace(data, on_bad_record='skip')  # its record list is in-process
    assert skip.workers_for('gpu') == 0
    assert dataclasses.replace(data, read_workers=3).workers_for('cpu') == 3


def test_the_default_config_holds_every_setting_and_unset_keys_take_their_defaults():
    """default_config() has a key for every field of every settings section (so any key can be
    overridden on any config that starts from it); unset ones take the dataclass's default or,
    in anchors and loss, the preset's; what a run must give is named when missing."""
    from retinanet_jax.ops.anchors import AnchorConfig
    from retinanet_jax.ops.losses import LossConfig
    from retinanet_jax.ops.matching import MatcherConfig

    c = settings.default_config()
    for section, cls in (('model', settings.ModelConfig), ('data', settings.DataConfig)):
        assert {f.name for f in dataclasses.fields(cls)} == set(c[section])
    assert {f.name for f in dataclasses.fields(MatcherConfig)} == set(c.loss.matcher)
    with pytest.raises(ValueError, match=r"the config lacks \['batch_size', 'train_steps'\]"):
        settings.from_config(c)
    c.batch_size, c.train_steps = 2, 10
    with pytest.raises(ValueError, match=r'config\.data\.dataset is not set'):
        settings.from_config(c)
    c.data.dataset = 'shapes'
    s = settings.from_config(c)
    assert s.anchors == AnchorConfig.paper() and s.loss == LossConfig.paper()
    assert s.model == settings.ModelConfig() and s.skip_nonfinite == 0
    c.anchors.preset, c.loss.preset, c.loss.gamma = 'torchvision', 'torchvision_v2', 1.5
    c.loss.matcher.positive_threshold = 0.6
    s = settings.from_config(c)
    assert s.anchors == AnchorConfig.torchvision()
    v2 = LossConfig.torchvision_v2()
    matcher = dataclasses.replace(v2.matcher, positive_threshold=0.6)
    assert s.loss == dataclasses.replace(v2, gamma=1.5, matcher=matcher)
    with pytest.raises(ValueError, match=r"config\.loss\.matcher has unknown keys \['iou'\]"):
        settings.from_config({**c.to_dict(), 'loss': {'matcher': {'iou': 0.5}}})
    # a run's config.json, written and read back, gives the same settings
    import json

    assert settings.from_config(json.loads(settings.to_json(c))) == s
