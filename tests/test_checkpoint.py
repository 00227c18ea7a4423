"""A run's checkpoints under faults: unreadable ones are moved aside and the newest readable one
restores; a checkpoint of another model still stops; a failed write names folder and step."""

import functools
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import smoke
from retinanet_jax import checkpoint, settings, sharding
from retinanet_jax.training import state as train_state
from retinanet_jax.training import trainer

from .test_train import params_of


def damage(run: Path, step: int, how: str) -> None:
    folder = run / 'checkpoints' / str(step)
    if how == 'truncated arrays':  # every array data file of the model cut to zero bytes
        files = [p for p in (folder / 'model').rglob('*') if p.is_file() and p.parent.name == 'd']
        assert files
        for p in files:
            p.write_bytes(b'')
    elif how == 'missing arrays':  # the optimizer's array data files deleted
        files = [p for p in (folder / 'optimizer').rglob('*') if p.parent.name == 'd']
        assert files
        for p in files:
            p.unlink()
    elif how == 'missing item':
        shutil.rmtree(folder / 'optimizer')
    elif how == 'unreadable position':
        position = folder / 'data' / 'metadata'
        position.write_text(position.read_text()[:25])
    elif how == 'corrupt position':
        (folder / 'data' / 'metadata').write_text('{"next_index": 4}')
    else:
        raise ValueError(how)


@functools.cache
def smoke_state(config_json: str):
    """(abstract train state, input order) of a config (built once per config)."""
    from retinanet_jax.data import input_position

    s = settings.from_config(json.loads(config_json))
    _, abstract = train_state.train_graph(s, sharding.make_mesh())
    source, _ = settings.make_sources(s)
    order = input_position.order_of(source, s.input, s.batch_size, split='train', process_count=1)
    return abstract, order


@functools.cache
def model_sum(run: str, step: int) -> float:
    """The sum of a run's saved model weights at `step` (read once per process)."""
    saved = params_of(Path(run), step)
    return sum(np.sum(v, dtype=np.float64) for k, v in saved.items() if 'model' in k.split('/')[0])


def resume(run: Path, config=None):
    """(step, restored items) that a run in `run` would resume from."""
    abstract, order = smoke_state(settings.to_json(config or smoke.get_config()))
    with checkpoint.run_checkpoints(run, keep=2) as manager:
        restored, step = train_state.restore_newest(manager, abstract, order)
    return step, restored


def copy_run(smoke_run, tmp_path) -> Path:
    """The shared run's checkpoints, copied (all a resume reads)."""
    run = tmp_path / 'run'
    shutil.copytree(smoke_run[0] / 'checkpoints', run / 'checkpoints')
    return run


@pytest.mark.parametrize(
    'how',
    [
        'truncated arrays',
        'missing arrays',
        'missing item',
        'unreadable position',
        'corrupt position',
    ],
)
def test_an_unreadable_newest_checkpoint_is_moved_aside_and_the_previous_restores(
    tmp_path, smoke_run, capsys, how
):
    run = copy_run(smoke_run, tmp_path)
    damage(run, 4, how)
    step, state = resume(run)
    assert step == 2
    warning = capsys.readouterr().err
    assert 'checkpoint 4 cannot be restored' in warning and 'unreadable_checkpoints/4' in warning
    assert len(warning.strip().splitlines()) == 1
    assert (run / 'unreadable_checkpoints' / '4').is_dir()  # kept, not deleted
    assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['2']
    want = model_sum(str(smoke_run[0]), 2)  # the restored model is checkpoint 2's
    assert want == sum(
        np.sum(np.asarray(x), dtype=np.float64) for x in jax.tree.leaves(state['model'])
    )


def test_falling_back_then_training_ends_bitwise_equal_to_the_straight_run(tmp_path, smoke_run):
    run = copy_run(smoke_run, tmp_path)
    damage(run, 4, 'truncated arrays')
    summary = trainer.train_and_evaluate(smoke.get_config(), str(run))
    assert summary['step'] == 4
    want, got = params_of(smoke_run[0], 4), params_of(run, 4)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert (run / 'unreadable_checkpoints' / '4').is_dir()


def test_when_no_checkpoint_restores_the_run_stops_and_never_starts_over(tmp_path, smoke_run):
    run = copy_run(smoke_run, tmp_path)
    damage(run, 4, 'truncated arrays')
    damage(run, 2, 'missing item')
    with pytest.raises(
        ValueError,
        match=r'checkpoints: no checkpoint restores; moved aside: '
        r'4 \(.*unreadable (metadata|arrays).*\); 2 \(.* has no '
        r"'optimizer' item\)",
    ):
        resume(run)
    assert not list((run / 'checkpoints').glob('[0-9]*'))
    assert sorted(p.name for p in (run / 'unreadable_checkpoints').iterdir()) == ['2', '4']
    with pytest.raises(
        ValueError,
        match=r"holds no checkpoint, and .*\['2', '4'\] .* does not "
        r'start over',
    ):
        resume(run)


def test_a_checkpoint_of_another_model_or_order_stops_and_is_left_alone(tmp_path, smoke_run):
    run = copy_run(smoke_run, tmp_path)
    other = smoke.get_config()
    other.model.fpn_width = 64
    with pytest.raises(ValueError, match='checkpoints/4 does not match this config'):
        resume(run, other)
    other = smoke.get_config()
    other.data.options['sizes'] = {'train': 20, 'validation': 4}
    with pytest.raises(ValueError, match=r'order has changed .*num_examples 16 -> 20'):
        resume(run, other)
    assert not (run / 'unreadable_checkpoints').exists()
    assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['2', '4']


def test_a_failed_write_names_folder_and_step_and_keeps_the_earlier_checkpoints(
    tmp_path, smoke_run, monkeypatch
):
    run = copy_run(smoke_run, tmp_path)
    _step, state = resume(run)
    import orbax.checkpoint as ocp

    def full_disk(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    with checkpoint.run_checkpoints(run, keep=2) as manager:
        monkeypatch.setattr(ocp.CheckpointManager, 'save', full_disk)
        with pytest.raises(checkpoint.CheckpointWriteError) as error:
            checkpoint.save_run(manager, 5, state, {'next_index': 5, 'order': {}})
    message = str(error.value)
    assert str(run / 'checkpoints') in message and 'checkpoint 5' in message
    assert 'No space left on device' in message and '\n' not in message
    monkeypatch.undo()
    assert resume(run)[0] == 4  # the earlier checkpoints restore as before
    assert json.loads((run / 'checkpoints' / '4' / 'data' / 'metadata').read_text())['order']


@pytest.fixture(scope='module')
def best_run(tmp_path_factory, smoke_run):
    """The smoke config evaluated every 2 steps, keeping the best by val_loss (the lowest; AP is
    0 this early): (workdir, summary). (The smoke run's programs.)"""
    config = smoke.get_config()
    config.update(eval_every=2, keep_best='val_loss')
    workdir = tmp_path_factory.mktemp('best') / 'run'
    return workdir, trainer.train_and_evaluate(config, str(workdir))


def eval_scores(workdir: Path, tag: str) -> dict[int, float]:
    """The evaluations' `tag` by step, as training wrote them to TensorBoard."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / 'logs'), size_guidance={'tensors': 0}).Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}


@pytest.mark.slow
def test_keep_best_keeps_the_best_evaluation_and_run_best_loads_it(tmp_path, best_run):
    """config.keep_best (a metric): DIR/best holds the one checkpoint of the best evaluation beside
    the newest ones; `RUN:best` loads it, `RUN` the newest."""
    from retinanet_jax.inference.loading import load_predictor

    workdir, summary = best_run
    assert summary['step'] == 4
    best_dirs = [p.name for p in (workdir / 'best').iterdir() if p.name.isdigit()]
    assert len(best_dirs) == 1
    best = load_predictor(f'{workdir}:best')
    newest = load_predictor(workdir)
    assert best.description.startswith(f'checkpoint step {best_dirs[0]} of {workdir} (best by')
    assert newest.step == 4 and best.step == int(best_dirs[0])
    # The kept one is the better of the two evaluations (TensorBoard holds each one's).
    scores = eval_scores(workdir, 'eval/val_loss')
    assert sorted(scores) == [2, 4]
    assert scores[best.step] == min(scores.values()) and len(set(scores.values())) > 1
    with pytest.raises(FileNotFoundError, match='is not a training run'):
        load_predictor(f'{tmp_path / "nothing"}:best')
    bad = smoke.get_config()
    bad.update(keep_best='mAP')
    with pytest.raises(ValueError, match=r"config\.keep_best='mAP' is not a metric.*'ema/AP'"):
        trainer.train_and_evaluate(bad, str(tmp_path / 'bad'))
    assert not list((tmp_path / 'bad' / 'checkpoints').iterdir())  # named before step 1
    bad.update(keep_best='ema/val_loss')
    bad.evaluation.tile_size = 32
    with pytest.raises(ValueError, match=r"keep_best='ema/val_loss': an evaluation by tiles .*"):
        trainer.train_and_evaluate(bad, str(tmp_path / 'bad'))


@pytest.mark.slow
def test_every_command_that_takes_a_model_takes_run_best(tmp_path, best_run, capsys):
    """predict, evaluate, analyze and export take --model=RUN:best (the one model-path reading,
    inference/model_path.py), run as a user runs them (commands/command.py, in this process).
    evaluate reports the validation loss as training's evaluation did for the same weights."""
    from PIL import Image

    from retinanet_jax.commands import analyze, command, evaluate, export, predict

    workdir, _ = best_run
    best = f'{workdir}:best'
    scores = eval_scores(workdir, 'eval/val_loss')
    best_step = min(scores, key=scores.get)
    images = tmp_path / 'images'
    images.mkdir()
    Image.new('RGB', (80, 60), (90, 120, 200)).save(images / 'a.png')
    runs = {
        'predict': (predict, [f'--images={images}', f'--out={tmp_path / "predicted"}']),
        'evaluate': (
            evaluate,
            [f'--out={tmp_path / "eval.json"}', '--weights=raw', '--pr_iou=0.4'],
        ),
        'analyze': (analyze, [f'--out={tmp_path / "analysis"}', '--worst=1']),
        'export': (
            export,
            [f'--out={tmp_path / "export"}', '--format=stablehlo', '--image_size=128,128'],
        ),
    }
    for name, (module, flags) in runs.items():
        assert command.run(module, [name, f'--model={best}', *flags], name) == 0, name
    out = capsys.readouterr().out
    assert f'checkpoint step {best_step} of {workdir} (best by' in out
    assert json.loads((tmp_path / 'predicted' / 'detections.json').read_text()) is not None
    evaluated = json.loads((tmp_path / 'eval.json').read_text())
    assert evaluated['step'] == best_step and evaluated['model'] == best
    np.testing.assert_allclose(evaluated['val_loss'], scores[best_step], rtol=1e-5)
    assert {'P', 'R', 'F1', 'best_F1', 'best_F1_score'} <= set(evaluated)
    analysed = json.loads((tmp_path / 'analysis' / 'metrics.json').read_text())
    assert {'AP', 'val_loss', 'F1'} <= set(analysed)
    manifest = json.loads((tmp_path / 'export' / 'export.json').read_text())
    assert list(manifest['files']) == ['stablehlo']
