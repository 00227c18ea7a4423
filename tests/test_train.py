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
from retinanet_jax import settings
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.training import state as train_state
from retinanet_jax.training import step as train_step
from retinanet_jax.training import trainer

from .helpers import CROP_OVERRIDES, crop_config, require, xla_flags

ROOT = Path(__file__).resolve().parents[1]


def params_of(workdir: Path, step: int) -> dict:
    """The saved train state of a checkpoint (model, optimizer, and the EMA where the run keeps
    one), as flat numpy."""
    import orbax.checkpoint as ocp

    from retinanet_jax import checkpoint

    with checkpoint.run_checkpoints(workdir) as manager:
        saved = manager.item_metadata(step)
        items = {
            name: ocp.args.StandardRestore()
            for name in checkpoint.STATE_ITEMS
            if saved.get(name) is not None
        }
        restored = dict(manager.restore(step, args=ocp.args.Composite(**items)).items())
    return {
        '/'.join(map(str, k)): np.asarray(v)
        for k, v in jax.tree_util.tree_flatten_with_path(restored)[0]
    }


@pytest.mark.slow
def test_smoke_run_trains_evaluates_and_its_checkpoint_predicts(tmp_path, smoke_run):
    (tmp_path / 'straight').symlink_to(smoke_run[0])
    summary = smoke_run[1]
    assert summary['step'] == 4 and 0.0 <= summary['AP'] <= 1.0
    written = json.loads((tmp_path / 'straight' / 'metrics.json').read_text())
    assert written['AP'] == summary['AP']
    assert 0.0 <= summary['ema/AP'] <= 1.0 and summary['val_loss'] > 0  # EMA, validation loss
    # TensorBoard: the step's scalars, the evaluation's, per-class AP, PR curves and pictures.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / 'straight' / 'logs'), size_guidance={'tensors': 0})
    tags = set(events.Reload().Tags()['tensors'])
    for tag in (
        'learning_rate',
        'grad_norm',
        'images_per_second',
        'zero_positive_steps',
        'input_wait_share',
        'eval/AP',
        'eval/AP/circle',
        'eval/val_loss',
        'eval/ema/AP',
        'eval/ema/val_loss',
        'eval/predictions',
        'eval/pr_curves',
    ):
        assert tag in tags, (tag, sorted(tags))
    pictures = events.Tensors('eval/predictions')[-1].tensor_proto
    assert pictures.tensor_shape.dim[0].size == 2 + 2  # width, height, then a PNG per image of
    # the first evaluation batch (the smoke config's: 2), each 64x64 image enlarged 4x, twice
    assert pictures.string_val[:2] == [b'512', b'256']

    # The predict command on the trained run: pictures and JSON; unreadable files are skipped.
    from PIL import Image

    from retinanet_jax.commands.predict import predict_files
    from retinanet_jax.data import shapes
    from retinanet_jax.inference.loading import load_predictor

    images = tmp_path / 'images'
    images.mkdir()
    for i in range(2):
        Image.fromarray(shapes.generate_example(i, 'test', image_size=80)['image']).save(
            images / f'{i}.png'
        )
    (images / 'broken.png').write_bytes(b'not an image')
    predictor = load_predictor(tmp_path / 'straight')
    results = predict_files(predictor, [str(images)], tmp_path / 'out', min_score=0.0)
    assert (tmp_path / 'out' / '0.png').is_file() and (tmp_path / 'out' / '1.png').is_file()
    assert json.loads((tmp_path / 'out' / 'detections.json').read_text()) == results
    assert not (tmp_path / 'out' / 'broken.png').exists()
    assert all(
        r['category_id'] in (1, 2, 3) and r['file_name'] in ('0.png', '1.png') for r in results
    )

    # The evaluate command on the same checkpoint reproduces the training's final evaluation,
    # of the EMA weights by default (the smoke config keeps an EMA) and of the raw ones on ask.
    from retinanet_jax.commands.evaluate import evaluate_run

    assert predictor.description.endswith('(EMA weights)')
    stats = ('AP', 'AP50', 'AR100')
    evaluated = evaluate_run(tmp_path / 'straight')
    assert evaluated['step'] == 4 and evaluated['split'] == 'validation'
    assert {k: evaluated[k] for k in stats} == {k: summary[f'ema/{k}'] for k in stats}
    assert (tmp_path / 'straight' / 'eval_validation.json').is_file()
    raw = evaluate_run(tmp_path / 'straight', weights='raw')
    assert {k: raw[k] for k in stats} == {k: summary[k] for k in stats}
    ema, model = (load_predictor(tmp_path / 'straight', weights=w).state for w in ('ema', 'raw'))
    kernel = ('classification_head', 'output', 'kernel')
    ema_kernel, model_kernel = (
        np.asarray(s[kernel[0]][kernel[1]][kernel[2]]) for s in (ema, model)
    )
    assert not np.array_equal(ema_kernel, model_kernel)  # two different sets of weights

    # Resuming (a run killed with SIGKILL, then the same command) and refusing another model's
    # workdir: test_sigkill_then_sigterm_then_resume_equals_straight,
    # test_train_command_bad_input_says_why; unreadable checkpoints: tests/test_checkpoint.py.


def run_here(script: str, *args) -> None:
    """A test script run in this (one-device) process, as `python -c script args` would run it:
    the one-device reference of a multi-device test, with no start-up of its own, while the
    multi-device processes run."""
    from unittest import mock

    with mock.patch.object(sys, 'argv', ['-c', *map(str, args)]):
        exec(compile(script, '<script>', 'exec'), {'__name__': '__main__'})


TWO_PROCESSES = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    from configs import smoke
    from retinanet_jax.ops import anchors as anchor_lib
    from retinanet_jax.evaluation import coco_metrics
    from retinanet_jax.evaluation import split_evaluation as evaluation
    from retinanet_jax import inference
    from retinanet_jax import settings
    from retinanet_jax import sharding
    from retinanet_jax.training import state as train_state
    from retinanet_jax.training import step as train_step
    from retinanet_jax.data import input_position, pipeline
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if pid >= 0:  # two processes of 4 simulated devices each: a mesh of 8
        sharding.initialize_distributed(f'localhost:{port}', 2, pid)
    config = smoke.get_config()
    config.batch_size = 8
    # Adam's first update is ~lr * sign(gradient): a parameter whose gradient is ~0 moves by up
    # to lr times the relative difference that the reduction order makes in it (at 1e-3, 2e-5
    # was seen). At 1e-5 that stays under the test's 1e-6, and every update (~lr) above it.
    config.optim.lr = 1e-5
    s = settings.from_config(config)
    mesh = sharding.make_mesh()
    try:
        sharding.local_batch_size(12)
        refused = 0
    except ValueError as e:
        refused = int('not divisible by the number of devices (8)' in str(e))
    source, _ = settings.make_sources(s)
    shares = [
        pipeline.train_iterator(
            pipeline.train_dataset(source, s.input, 4, process_index=p, process_count=2))
        for p in range(2)
    ]
    anchors = np.asarray(anchor_lib.generate_anchors((64, 64), s.anchors))
    graph, state = train_state.create_state(s, mesh)
    step = train_step.make_train_step(graph, anchors, s, mesh)
    losses = []
    for i in range(2):
        rows = [next(s) for s in shares]
        if pid >= 0:  # this process's share of the global batch
            local = rows[pid]
        else:  # one process: the whole global batch (process 0's rows, then process 1's)
            local = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        state, metrics = step(state, sharding.to_global(local, mesh))
        losses.append(float(metrics['loss']))
        if i == 0:  # after one step: parameters, batch-norm statistics, optimiser state
            np.savez(out + '.npz', **{str(j): np.asarray(x)
                                      for j, x in enumerate(jax.tree.leaves(state))})
    kernel = np.asarray(state['model']['classification_head']['output']['kernel'])
    # Resume: the state and this process's input position are checkpointed (one directory for
    # both processes), restored, and the restored iterator goes on with the very batch that
    # the uninterrupted one gives next, each process with its own share.
    from retinanet_jax import checkpoint
    mine = max(pid, 0)
    order = input_position.order_of(source, s.input, 4, split='train', process_count=2)
    manager = checkpoint.run_checkpoints(sys.argv[4], keep=1)
    checkpoint.save_run(manager, 2, state, {'next_index': 2, 'order': order})
    restored, step = checkpoint.restore_run(manager, train_state.abstract_state(state), data=True)
    input_position.check_position(restored['data'], order, step, 'checkpoint')
    resumed = pipeline.train_iterator(
        pipeline.train_dataset(source, s.input, 4, process_index=mine, process_count=2),
        restored['data']['next_index'])
    want, got = next(shares[mine]), next(resumed)
    resumed_ok = step == 2 and all(np.array_equal(want[k], got[k]) for k in want) and all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored['model']),
                                             jax.tree.leaves(state['model'])))
    resumed_ids = [int(i) for i in got['image_id']]
    # Evaluation: each process predicts its share of the split; detections are gathered.
    shards = dict(process_index=jax.process_index(), process_count=jax.process_count())
    eval_ds, n = pipeline.eval_dataset(source, s.input, 8 // jax.process_count(),
                                       split='validation', **shards)
    predict = inference.make_predict_step(graph.eval_model, (64, 64), s.anchors, s.postprocess,
                                          mesh)
    evaluator = coco_metrics.make_evaluator(source, 'validation')
    metrics = evaluation.evaluate_model(predict, state['model'], pipeline.eval_batches(eval_ds), n,
                                 evaluator, mesh)
    # Sliced evaluation of shares of unequal size (3 images: 2 and 1, 8 and 4 windows of 32 px,
    # calls of 4 windows a process): every process must launch the predict program as often
    # as the other (2 calls and 1: one blank call), or both hang.
    import dataclasses
    from retinanet_jax.data import shapes
    from retinanet_jax.evaluation.tiled_evaluation import evaluate_tiled
    from retinanet_jax.inference import tiling
    from retinanet_jax.inference.predictor import Predictor
    three = shapes.ShapesSource(image_size=64, sizes={'validation': 3})
    predictor = Predictor(graphdef=graph.eval_model, state=state['model'], mesh=mesh,
                          model_config=s.model, anchors=s.anchors, input=s.input, loss=s.loss,
                          postprocess=dataclasses.replace(s.postprocess, score_threshold=0.0),
                          description='the state')
    sliced = coco_metrics.make_evaluator(three, 'validation')
    per_process = 8 // jax.process_count()  # evaluate_model's program: a global batch of 8
    evaluate_tiled(predictor, three, 'validation', sliced, tiling.TileConfig(32, 0.0, per_process))
    rows, _ = sliced.detections()
    tiled = [[int((rows[:, 0] == i).sum()), float(rows[rows[:, 0] == i, 5].sum())]
             for i in sorted(set(rows[:, 0].tolist()))]
    # Preemption: a SIGTERM to process 1 alone; JAX's preemption sync makes both processes
    # stop at the same step (the one a run saves before it exits).
    preempted_at = None
    if pid >= 0:
        import os, signal, time
        from retinanet_jax.training.preemption import PreemptionWatcher
        with PreemptionWatcher() as watcher:
            for i in range(1, 500):
                if pid == 1 and i == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                if watcher.reached(i):
                    preempted_at = i
                    break
                time.sleep(0.01)
    json.dump({'preempted_at': preempted_at,
               'processes': jax.process_count(), 'devices': jax.device_count(),
               'local_devices': jax.local_device_count(), 'refused': refused,
               'losses': losses, 'kernel_sum': float(np.abs(kernel).sum()), 'eval': metrics,
               'tiled': tiled,
               'resumed_ok': bool(resumed_ok), 'resumed_ids': resumed_ids}, open(out, 'w'))
""")


@pytest.mark.multiprocess
def test_two_processes_of_four_devices_agree_with_one_device_and_resume_their_shares(tmp_path):
    """Two processes on localhost, 4 simulated CPU devices each (a mesh of 8 devices over 2
    hosts), against one process on one device fed the same global batch: the same losses, and
    after one step the same parameters, batch-norm statistics (synchronised over the 8 shards)
    and optimiser state; each process resumes its own input share; evaluation gathers, whole
    images and by tiles (shares of unequal size, which hung before tiling.idle_calls); a SIGTERM
    to one process stops both at the same step (JAX's preemption sync)."""
    import socket

    assert jax.device_count() == 1
    with socket.socket() as s:
        s.bind(('localhost', 0))
        port = s.getsockname()[1]
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'XLA_FLAGS': xla_flags(4)}

    def start(pid):
        log = open(tmp_path / f'{pid}.log', 'w')  # a file, not a pipe nobody reads yet
        return subprocess.Popen(
            [
                sys.executable,
                '-c',
                TWO_PROCESSES,
                str(pid),
                str(port),
                str(tmp_path / f'{pid}'),
                str(tmp_path / ('ckpt-one' if pid < 0 else 'ckpt-two')),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    processes = [start(0), start(1)]
    run_here(TWO_PROCESSES, -1, port, tmp_path / '-1', tmp_path / 'ckpt-one')  # meanwhile
    for p in processes:
        p.wait(timeout=600)
        assert p.returncode == 0, (tmp_path / f'{p.args[3]}.log').read_text()[-3000:]
    r0, r1, one = (json.loads((tmp_path / f'{i}').read_text()) for i in (0, 1, -1))
    assert (r0['processes'], r0['devices'], r0['local_devices']) == (2, 8, 4)
    assert (one['processes'], one['devices']) == (1, 1)
    assert r0['refused'] == r1['refused'] == 1  # batch 12 on 8 devices: a clear refusal
    assert r0['losses'] == r1['losses']  # the same global value on both processes
    np.testing.assert_allclose(r0['losses'], one['losses'], rtol=1e-5)
    np.testing.assert_allclose(r0['kernel_sum'], one['kernel_sum'], rtol=1e-4)
    eight, single = np.load(tmp_path / '0.npz'), np.load(tmp_path / '-1.npz')
    assert eight.files == single.files
    for key in single.files:
        # A channel whose batch variance is ~0 makes batch norm's gradient ill-conditioned,
        # and the reduction order then moves that channel alone (seen: 32 of 589,824 elements
        # of one Adam moment, all in one output channel, off by up to 1.5e-6): a few outliers
        # pass, a wrong reduction (every element off) does not.
        off = ~np.isclose(eight[key], single[key], rtol=1e-4, atol=1e-6)
        assert off.mean() <= 1e-3, (key, int(off.sum()), off.size)
        np.testing.assert_allclose(eight[key], single[key], rtol=1e-2, atol=1e-5, err_msg=key)
    assert r0['losses'][0] != r0['losses'][1]  # two different batches, a real update
    # Each process resumed its own share exactly, from one shared checkpoint directory.
    assert r0['resumed_ok'] and r1['resumed_ok'] and one['resumed_ok']
    assert not set(r0['resumed_ids']) & set(r1['resumed_ids'])
    assert one['resumed_ids'] == r0['resumed_ids']  # one process reading share 0: the same
    # Every process scores the gathered detections of the whole split: the same numbers, and
    # those of one process evaluating everything.
    assert r0['eval'] == r1['eval']
    # Sliced evaluation, shares of 8 and 4 windows: both processes finish (tiling.idle_calls)
    # with the gathered detections of one process evaluating everything, image by image.
    assert r0['tiled'] == r1['tiled'] and len(one['tiled']) == 3
    assert [n for n, _ in r0['tiled']] == [n for n, _ in one['tiled']]
    np.testing.assert_allclose(r0['tiled'], one['tiled'], rtol=1e-4)
    # A SIGTERM to one process: both stop at the same step, after the signal.
    assert r0['preempted_at'] == r1['preempted_at'] and r0['preempted_at'] >= 3
    np.testing.assert_allclose(
        [r0['eval'][k] for k in sorted(one['eval'])],
        [one['eval'][k] for k in sorted(one['eval'])],
        atol=1e-3,
    )


@pytest.mark.slow
def test_backbone_initialised_from_a_torchvision_file(tmp_path, smoke_run):
    """(After the shared smoke run, whose compiled train step this test's is.)"""
    require('torch', 'torchvision')
    import torch
    import torchvision

    from retinanet_jax import sharding

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # statistics unlike the initial ones, so that loading shows
        resnet.bn1.running_var.uniform_(0.5, 2.0)
        resnet.bn1.weight.uniform_(0.5, 2.0)
    torch.save(resnet.state_dict(), tmp_path / 'resnet18.pth')
    config = smoke.get_config()
    s = settings.from_config(config)
    mesh = sharding.make_mesh()
    graph, state = train_state.create_state(s, mesh)
    state = train_state.init_backbone(graph, state, str(tmp_path / 'resnet18.pth'), mesh)
    backbone = state['model']['backbone']
    expected = resnet.layer2[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0)  # OIHW->HWIO
    np.testing.assert_array_equal(np.asarray(backbone['layer2'][1]['conv2']['kernel']), expected)
    np.testing.assert_array_equal(np.asarray(backbone['bn1']['var']), resnet.bn1.running_var)
    np.testing.assert_array_equal(
        np.asarray(backbone['bn1']['scale']), resnet.bn1.weight.detach().numpy()
    )
    # The state is still a train state on the mesh: one step runs.
    anchors = np.asarray(anchor_lib.generate_anchors((64, 64), s.anchors))
    step = train_step.make_train_step(graph, anchors, s, mesh)
    # A batch of the smoke run's own pipeline: the step is then the program the run compiled.
    from retinanet_jax.data import pipeline

    source, _ = settings.make_sources(s)
    batch = pipeline.train_dataset(source, s.input, s.batch_size)[0]
    _, metrics = step(state, sharding.to_global(batch, mesh))
    assert np.isfinite(float(metrics['loss']))

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / 'r34.pth')
    _, state = train_state.create_state(s, mesh)
    with pytest.raises(ValueError, match=r'(?s)config.init.backbone=.*r34.pth: .*unexpected keys'):
        train_state.init_backbone(graph, state, str(tmp_path / 'r34.pth'), mesh)


@pytest.mark.multiprocess
def test_sigkill_then_sigterm_then_resume_equals_straight(tmp_path, crop_run, capsys):
    """`python train.py` killed with SIGKILL after its first checkpoint, a save cut off half
    way (orbax's temporary directory left behind); the same command resumes and is sent a
    SIGTERM (a scheduler's preemption) as soon as it says so: it saves the step it reaches and
    exits with 143; resumed again, the run ends with exactly the parameters, optimiser state
    and EMA of the weights of the run that was never interrupted. Training by random windows
    (config.input.crop_size, the crop run's): each step's windows are the same whatever the
    step the run resumed at."""
    import signal
    import time

    workdir = tmp_path / 'killed'
    command = [
        sys.executable,
        'train.py',
        '--config=configs/smoke.py',
        f'--workdir={workdir}',
        *CROP_OVERRIDES,
        '--config.checkpoint_every=1',
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not (workdir / 'checkpoints' / '1').is_dir():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, 'no checkpoint within 300 s'
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
    assert steps and steps[-1] < 3, f'killed too late to test anything: {steps}'
    # A save interrupted half way leaves orbax's temporary directory, never a step directory.
    partial = workdir / 'checkpoints' / f'{steps[-1] + 1}.orbax-checkpoint-tmp-1700000000'
    partial.mkdir()
    (partial / 'garbage').write_bytes(b'\x00' * 10)

    # Resumed, then preempted: a SIGTERM as soon as it has resumed (set-up included, the
    # signal is heard from the start: the step in flight is the next one).
    no_periodic = [*command[:-1], '--config.checkpoint_every=1000']
    proc = subprocess.Popen(
        no_periodic, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    assert f'resumed from {workdir}/checkpoints at step {steps[-1]}' in line, line
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert time.time() - sent < 30
    reached = steps[-1] + 1
    assert f'SIGTERM received: saved step {reached} to {workdir}/checkpoints/{reached}' in err
    assert 'Traceback' not in err and not (workdir / 'metrics.json').exists()
    assert (workdir / 'checkpoints' / str(reached)).is_dir()

    # The rest of the run, here (the command's resume is proven above): it ends bitwise equal.
    config = crop_config()
    config.checkpoint_every = 1000
    trainer.train_and_evaluate(config, str(workdir))
    assert f'resumed from {workdir}/checkpoints at step {reached}' in capsys.readouterr().out
    want, got = params_of(crop_run[0], 4), params_of(workdir, 4)
    assert want.keys() == got.keys() and any(k.startswith("['ema']") for k in want)  # EMA too
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize('dataset', ['coco', 'voc'])
def test_configs_train_end_to_end_under_mock_tfds(tmp_path, dataset):
    """configs/coco.py and configs/voc.py (shrunk to a tiny model and 64x64 images) train and
    evaluate end to end on mocked tensorflow-datasets; VOC evaluates on voc/2007 test."""
    import importlib

    from .helpers import mock_tfds

    config = importlib.import_module(f'configs.{dataset}').get_config()
    config.input.update(image_size=(64, 64), short_side=48, max_side=64, max_boxes=8)
    # (layers 1-3 frozen as well: a gradient through layer4 alone compiles ~30 % faster)
    config.model.update(depth=18, freeze_at=4, fpn_width=32, head_depth=1, dtype='float32')
    config.update(batch_size=2, train_steps=2, eval_every=2, checkpoint_every=2, log_every=1)
    with mock_tfds(coco=dataset == 'coco'):
        summary = trainer.train_and_evaluate(config, str(tmp_path))
    assert summary['step'] == 2 and 0.0 <= summary['AP'] <= 1.0
    assert ('VOC_AP50' in summary) == (dataset == 'voc')
    from retinanet_jax.evaluation import coco_metrics

    with mock_tfds(coco=dataset == 'coco'):
        source, evaluated = settings.make_sources(settings.from_config(config))
        evaluator = coco_metrics.make_evaluator(evaluated, config.data.eval_split)
    if dataset == 'voc':  # trained on VOC 2007+2012, evaluated on VOC 2007 test, 11-point
        assert (source.name, evaluated.name, config.data.eval_split) == (
            'voc/2007+2012',
            'voc/2007',
            'test',
        )
        assert evaluator.voc_ap50 == '11_point'
    else:
        assert evaluated is source and evaluator.voc_ap50 is None
    assert (tmp_path / 'checkpoints' / '2').is_dir()
    saved = json.loads((tmp_path / 'config.json').read_text())
    assert saved['data']['dataset'] == config.data.dataset


@pytest.mark.slow
def test_non_finite_steps_are_skipped_counted_and_too_many_stop_naming_the_images(tmp_path, capsys):
    """config.skip_nonfinite=1, one run whose steps 2, 4 and 5 have a NaN loss and gradient:
    a skipped step leaves the whole train state (parameters, optimiser state, batch statistics)
    as it was, the step after it trains, each skip is counted, and two in a row stop the run,
    naming the step and its images, with no checkpoint of the bad step."""
    from retinanet_jax.data import pipeline
    from retinanet_jax.testing import faults

    config = smoke.get_config()
    config.update(skip_nonfinite=1, checkpoint_every=1, keep_checkpoints=5, train_steps=5)
    config.eval_every = 1000  # no evaluation: the run stops first
    s = settings.from_config(config)
    source, _ = settings.make_sources(s)
    ids = [int(i) for i in pipeline.train_dataset(source, s.input, 2)[4]['image_id']]  # step 5
    with faults.non_finite_steps({2, 4, 5}), pytest.raises(FloatingPointError) as error:
        trainer.train_and_evaluate(config, str(tmp_path))
    message = str(error.value)
    assert f'at step 5, images {ids}' in message and '2 non-finite steps in a row' in message
    assert message.endswith(f'the last checkpoint: {tmp_path}/checkpoints/4')
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['1', '2', '3', '4']
    err = capsys.readouterr().err
    assert err.count('update skipped (1 in a row)') == 2 and 'at step 2, images' in err

    saved = {step: params_of(tmp_path, step) for step in (1, 2, 3, 4)}
    assert saved[1].keys() == saved[4].keys() and any('mean' in k for k in saved[1])  # stats too
    for skipped in (2, 4):
        for key in saved[1]:
            np.testing.assert_array_equal(saved[skipped][key], saved[skipped - 1][key], key)
    kernel = next(k for k in saved[1] if 'head' in k and 'kernel' in k)  # trained (not frozen)
    assert not np.array_equal(saved[3][kernel], saved[2][kernel])  # step 3 trained


def test_a_run_built_again_in_one_process_reuses_its_programs():
    """The same settings give the same train graph, initialiser, train step and predict step
    objects (no new trace); a change they depend on gives new ones."""
    import dataclasses

    from retinanet_jax import sharding
    from retinanet_jax.inference.predictor import make_predict_step

    s, mesh = settings.from_config(smoke.get_config()), sharding.make_mesh()
    graph = train_state.train_graph(s, mesh)[0]
    assert train_state.train_graph(s, mesh)[0] is graph
    anchors = np.asarray(anchor_lib.generate_anchors(s.image_hw, s.anchors))
    step = train_step.make_train_step(graph, anchors, s, mesh)
    assert train_step.make_train_step(graph, anchors.copy(), s, mesh) is step
    longer = dataclasses.replace(s, train_steps=s.train_steps + 1)  # another schedule
    assert train_state.train_graph(longer, mesh)[0] is not graph
    assert train_step.make_train_step(graph, anchors, longer, mesh) is not step
    predict = make_predict_step(graph.eval_model, s.image_hw, s.anchors, s.postprocess, mesh)
    assert make_predict_step(graph.eval_model, s.image_hw, s.anchors, s.postprocess, mesh) is (
        predict
    )
    low = dataclasses.replace(s.postprocess, score_threshold=0.001)  # a threshold alone: the
    other = make_predict_step(graph.eval_model, s.image_hw, s.anchors, low, mesh)  # same program
    assert other is not predict and other.program is predict.program
    fewer = dataclasses.replace(s.postprocess, max_detections=7)
    fewer_step = make_predict_step(graph.eval_model, s.image_hw, s.anchors, fewer, mesh)
    assert fewer_step.program is not predict.program
