"""MetricWriter (TensorBoard events without TensorFlow) against tf.summary's own events: the
same tags, steps, values, plugins and pictures, as TensorBoard's reader sees them."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from retinanet_jax.training.metric_writer import MetricWriter

SCALARS = {
    3: {'loss': 1.25, 'eval/AP': 0.5, 'eval/AP/circle': np.float32(0.125)},
    7: {'loss': 0.75},
}
PICTURES = np.random.default_rng(0).integers(0, 256, (2, 6, 10, 3), dtype=np.uint8)


def read(logdir):
    events = EventAccumulator(str(logdir), size_guidance={'tensors': 0}).Reload()
    out = {}
    for tag in events.Tags()['tensors']:
        plugin = events.SummaryMetadata(tag).plugin_data.plugin_name
        out[tag] = (
            plugin,
            [(e.step, tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)],
        )
    return out


def test_events_equal_tf_summary(tmp_path):
    ours = MetricWriter(tmp_path / 'ours')
    reference = tf.summary.create_file_writer(str(tmp_path / 'tf'))
    for step, scalars in SCALARS.items():
        ours.write(step, scalars)
        with reference.as_default(step=step):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value)
    ours.images(7, {'eval/predictions': PICTURES})
    with reference.as_default(step=7):
        tf.summary.image('eval/predictions', PICTURES, max_outputs=len(PICTURES))
    reference.flush()
    got, want = read(tmp_path / 'ours'), read(tmp_path / 'tf')
    assert sorted(got) == sorted(want) == ['eval/AP', 'eval/AP/circle', 'eval/predictions', 'loss']
    for tag, (plugin, values) in want.items():
        assert got[tag][0] == plugin, tag  # 'scalars' / 'images': what TensorBoard shows them by
        assert [s for s, _ in got[tag][1]] == [s for s, _ in values], tag
        for (_, a), (_, b) in zip(got[tag][1], values, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape, tag
            if plugin == 'images':  # width, height, then the PNGs: the same pixels
                assert list(a[:2]) == list(b[:2]) == [b'10', b'6']
                for png_a, png_b, image in zip(a[2:], b[2:], PICTURES, strict=True):
                    np.testing.assert_array_equal(tf.io.decode_png(png_a).numpy(), image)
                    np.testing.assert_array_equal(tf.io.decode_png(png_b).numpy(), image)
            else:
                np.testing.assert_array_equal(a, b, err_msg=tag)


def test_two_writers_in_one_second_keep_both_files_and_bad_pictures_are_named(tmp_path):
    first, second = MetricWriter(tmp_path), MetricWriter(tmp_path)
    first.write(1, {'a': 1.0})
    second.write(2, {'a': 2.0})
    assert first.path != second.path and len(list(tmp_path.iterdir())) == 2
    assert [s for s, _ in read(tmp_path)['a'][1]] == [1, 2]
    with pytest.raises(ValueError, match=r'eval/pr_curves must be uint8 \[N, H, W, 3\], got uint8'):
        first.images(1, {'eval/pr_curves': np.zeros((4, 4, 3), np.uint8)})


def test_a_training_process_does_not_import_tensorflow():
    code = (
        'import sys; import train; from retinanet_jax.training import trainer, metric_writer; '
        'from retinanet_jax.data import pipeline, sources; '
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False', out.stderr[-2000:]
