"""Training end to end on the smoke config, exact resume, sharding equivalence."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import smoke
from retinanet_jax import train_lib

ROOT = Path(__file__).resolve().parents[1]


def params_of(workdir: Path, step: int) -> dict:
    """The saved parameters of a checkpoint, as flat numpy."""
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(workdir / 'checkpoints') as manager:
        restored = manager.restore(step, args=ocp.args.StandardRestore())
    return {
        '/'.join(map(str, k)): np.asarray(v)
        for k, v in jax.tree_util.tree_flatten_with_path(restored)[0]
    }


def test_smoke_config_trains_evaluates_and_resumes_exactly(tmp_path):
    config = smoke.get_config()
    summary = train_lib.train_and_evaluate(config, str(tmp_path / 'straight'))
    assert summary['step'] == 4 and 0.0 <= summary['AP'] <= 1.0
    written = json.loads((tmp_path / 'straight' / 'metrics.json').read_text())
    assert written['AP'] == summary['AP']
    assert list((tmp_path / 'straight' / 'logs').iterdir())  # TensorBoard events

    # The predict command on the trained run: pictures and JSON; unreadable files are skipped.
    from PIL import Image

    from retinanet_jax.data import shapes
    from retinanet_jax.predict import predict_files

    images = tmp_path / 'images'
    images.mkdir()
    for i in range(2):
        Image.fromarray(shapes.generate_example(i, 'test', image_size=80)['image']).save(
            images / f'{i}.png'
        )
    (images / 'broken.png').write_bytes(b'not an image')
    results = predict_files(tmp_path / 'straight', [str(images)], tmp_path / 'out', min_score=0.0)
    assert (tmp_path / 'out' / '0.png').is_file() and (tmp_path / 'out' / '1.png').is_file()
    assert json.loads((tmp_path / 'out' / 'detections.json').read_text()) == results
    assert not (tmp_path / 'out' / 'broken.png').exists()
    assert all(
        r['category_id'] in (1, 2, 3) and r['file_name'] in ('0.png', '1.png') for r in results
    )

    # The evaluate command on the same checkpoint reproduces the training's final evaluation.
    from retinanet_jax.evaluate import evaluate_run

    evaluated = evaluate_run(tmp_path / 'straight')
    assert evaluated['step'] == 4 and evaluated['split'] == 'validation'
    assert {k: evaluated[k] for k in ('AP', 'AP50', 'AR100')} == {
        k: summary[k] for k in ('AP', 'AP50', 'AR100')
    }
    assert (tmp_path / 'straight' / 'eval_validation.json').is_file()

    # Two steps, then a new run in the same workdir continues to four: same parameters.
    half = smoke.get_config()
    half.train_steps = 2
    train_lib.train_and_evaluate(half, str(tmp_path / 'resumed'))
    train_lib.train_and_evaluate(config, str(tmp_path / 'resumed'))
    straight, resumed = params_of(tmp_path / 'straight', 4), params_of(tmp_path / 'resumed', 4)
    assert straight.keys() == resumed.keys()
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)

    # A workdir holding another model's checkpoints is refused with a reason.
    other = smoke.get_config()
    other.model.fpn_width = 64
    with pytest.raises(ValueError, match='does not match this config'):
        train_lib.train_and_evaluate(other, str(tmp_path / 'straight'))


def test_schedule_golden():
    config = smoke.get_config()
    config.optim.update(
        schedule='steps', lr=0.01, warmup_steps=10, warmup_factor=0.1, decay_at=(2 / 3, 8 / 9)
    )
    config.train_steps = 90
    schedule = train_lib.make_schedule(config)
    got = [float(schedule(s)) for s in (0, 5, 10, 59, 60, 79, 80, 89)]
    np.testing.assert_allclose(got, [1e-3, 5.5e-3, 1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)
    config.optim.schedule = 'cosine'
    schedule = train_lib.make_schedule(config)
    np.testing.assert_allclose([float(schedule(10)), float(schedule(90))], [1e-2, 0.0], atol=1e-9)


def test_bad_configs_say_why(tmp_path):
    config = smoke.get_config()
    config.model.num_classes = 5
    with pytest.raises(ValueError, match='num_classes is 5 but dataset'):
        train_lib.train_and_evaluate(config, str(tmp_path))
    config = smoke.get_config()
    config.model.fpn_width = 16
    with pytest.raises(ValueError, match='fpn_width must be a multiple of 32'):
        train_lib.train_and_evaluate(config, str(tmp_path))


ONE_STEP = textwrap.dedent("""
    import os, sys
    import numpy as np
    import jax
    from configs import smoke
    from retinanet_jax import anchors as anchor_lib, sharding, train_lib
    from retinanet_jax.data import pipeline, sources
    config = smoke.get_config()
    config.batch_size = 8
    mesh = sharding.make_mesh()
    try:
        sharding.local_batch_size(12)
        refused = 0
    except ValueError as e:
        refused = int('not divisible by the number of devices (8)' in str(e))
    source, input_config, _ = train_lib._data(config)
    batch = next(pipeline.train_dataset(source, input_config, 8).as_numpy_iterator())
    anchors = np.asarray(anchor_lib.generate_anchors((64, 64), train_lib.anchor_config(config)))
    graphdef, state = train_lib.create_state(config, mesh)
    step = train_lib.make_train_step(graphdef, anchors, config, mesh)
    state, metrics = step(state, sharding.to_global(batch, mesh))
    leaves = {str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(state))}
    np.savez(sys.argv[1], loss=np.asarray(metrics['loss']), devices=jax.device_count(),
             refused=refused, **leaves)
""")


@pytest.mark.multiprocess
def test_one_step_on_eight_devices_equals_one_device(tmp_path):
    results = {}
    for devices in (1, 8):
        env = {
            **os.environ,
            'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
            'PYTHONPATH': str(ROOT),
        }
        out = tmp_path / f'{devices}.npz'
        proc = subprocess.run(
            [sys.executable, '-c', ONE_STEP, str(out)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = np.load(out)
    assert int(results[8]['devices']) == 8 and int(results[1]['devices']) == 1
    assert int(results[8]['refused']) == 1  # batch 12 on 8 devices: a clear refusal
    np.testing.assert_allclose(results[8]['loss'], results[1]['loss'], rtol=1e-5)
    for key in results[1].files:
        if key not in ('loss', 'devices', 'refused'):
            np.testing.assert_allclose(
                results[8][key], results[1][key], rtol=1e-4, atol=1e-6, err_msg=key
            )
