"""The commands (train.py, python -m retinanet_jax.{predict,evaluate,convert}): bad input ends
them with one clear line and no traceback; torchvision weights go through convert, predict and
evaluate."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .helpers import doc_snippet, require, xla_flags

ROOT = Path(__file__).resolve().parents[1]


def run_command(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_clear_failure(proc, *needles):
    """A failed command that says why in a few lines, without a Python traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]


def run_commands(*commands):
    """run_command for each (args, env) at once (start-up is most of a refused command's time),
    the results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda c: run_command(*c[0], env=c[1]), commands))


@pytest.mark.slow
def test_train_command_bad_input_says_why(tmp_path, smoke_run):
    smoke_config = '--config=configs/smoke.py'
    workdir = f'--workdir={tmp_path / "w"}'
    (tmp_path / 'broken.py').write_text('def get_config(:\n')
    run = tmp_path / 'run'  # a copy: the shared run stays untouched whatever happens
    shutil.copytree(smoke_run[0], run)
    nope, missing, broken, eight, other = run_commands(
        (('train.py', smoke_config, workdir, '--config.nope=1'), None),
        (('train.py', f'--config={tmp_path / "missing.py"}', workdir), None),
        (('train.py', f'--config={tmp_path / "broken.py"}', workdir), None),
        (('train.py', smoke_config, workdir), {'XLA_FLAGS': xla_flags(8)}),
        (('train.py', smoke_config, f'--workdir={run}', '--config.model.fpn_width=64'), None),
    )
    assert_clear_failure(nope, 'nope')
    assert_clear_failure(missing, 'missing.py')
    assert_clear_failure(broken)
    assert_clear_failure(eight, 'train.py: ', 'not divisible by the number of devices (8)')
    assert_clear_failure(other, 'does not match this config')
    saved = json.loads((run / 'config.json').read_text())
    assert saved['model']['fpn_width'] == 32  # the refused run left the run's files alone


def test_predict_and_evaluate_commands_bad_input_say_why(tmp_path, smoke_run):
    import shutil

    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('not an image')
    other = tmp_path / 'other'  # the run's checkpoints under a config of another model
    shutil.copytree(smoke_run[0], other)
    config = json.loads((other / 'config.json').read_text())
    config['model']['fpn_width'] = 64
    (other / 'config.json').write_text(json.dumps(config))
    predict = ['-m', 'retinanet_jax', 'predict', f'--out={tmp_path / "out"}']
    analyze = ['-m', 'retinanet_jax', 'analyze', f'--out={tmp_path / "analysis"}']
    no_images, no_model, evaluated, bad_iou = run_commands(
        ((*predict, f'--model={smoke_run[0]}', f'--images={tmp_path / "empty"}'), None),
        ((*predict, f'--model={tmp_path / "nothing"}', f'--images={tmp_path}'), None),
        (('-m', 'retinanet_jax', 'evaluate', f'--model={other}'), None),
        ((*analyze, f'--model={smoke_run[0]}', '--iou=1.5'), None),
    )
    assert_clear_failure(no_images, 'predict: no image files found', 'empty')
    assert_clear_failure(no_model, 'nothing: no such file or directory')
    assert_clear_failure(evaluated, 'evaluate: ', 'does not match this config')
    assert_clear_failure(bad_iou, 'analyze: iou must be in (0, 1), got 1.5')
    assert not (tmp_path / 'analysis').exists()


@pytest.mark.slow
def test_predict_and_evaluate_torchvision_weights(tmp_path):
    """A torchvision retinanet_resnet50_fpn state dict file and the model directory the
    converter makes of it predict the same detections; the file evaluates on a COCO folder."""
    require('torch', 'torchvision')
    import torch
    from PIL import Image
    from torchvision.models.detection import retinanet_resnet50_fpn

    from retinanet_jax.commands.evaluate import evaluate_run
    from retinanet_jax.commands.predict import predict_files
    from retinanet_jax.data import label_maps, shapes
    from retinanet_jax.inference.loading import load_predictor

    torch.manual_seed(0)
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():  # scores ~0.12 instead of 0.01, so that detections come out
        reference.head.classification_head.cls_logits.bias.fill_(-2.0)
    torch.save(reference.state_dict(), tmp_path / 'retinanet.pth')
    converted = run_command(
        '-m',
        'retinanet_jax',
        'convert',
        f'--input={tmp_path / "retinanet.pth"}',
        '--variant=v1',
        f'--output={tmp_path / "model"}',
        '--num_classes=91',
    )
    assert converted.returncode == 0, converted.stderr[-3000:]
    from retinanet_jax import checkpoint
    from retinanet_jax.models import ModelConfig

    model, config = checkpoint.load_model(tmp_path / 'model')
    assert config == ModelConfig.torchvision_v1(91)
    np.testing.assert_array_equal(
        model.fpn.p7.bias[...], reference.state_dict()['backbone.fpn.extra_blocks.p7.bias']
    )
    # docs/api.md's snippet on these files: the model directory, and the file into 20 classes
    code = doc_snippet('torchvision_weights')
    code = code.replace("'/tmp/retinanet_v1'", repr(str(tmp_path / 'model')))
    code = code.replace("'retinanet_resnet50_fpn_coco.pth'", repr(str(tmp_path / 'retinanet.pth')))
    namespace = {}
    exec(code, namespace)
    assert namespace['config'] == config and namespace['model20'].num_classes == 20
    np.testing.assert_array_equal(namespace['model20'].fpn.p7.bias[...], model.fpn.p7.bias[...])
    images = tmp_path / 'images'
    images.mkdir()
    Image.fromarray(shapes.generate_example(0, 'test', image_size=96)['image']).save(
        images / 'a.png'
    )
    sizes = dict(short_side=96, max_side=128)
    results = {}
    for name in ('retinanet.pth', 'model'):
        predictor = load_predictor(tmp_path / name, **sizes)
        assert predictor.label_map == label_maps.COCO91
        results[name] = predict_files(predictor, [str(images)], tmp_path / f'out-{name}')
        assert (tmp_path / f'out-{name}' / 'a.png').is_file()
    assert len(results['model']) == 100  # max_detections, all above the 0.05 threshold
    assert results['model'] == results['retinanet.pth']
    assert {r['category_id'] for r in results['model']} <= set(range(91))  # torchvision's labels

    # Evaluated on images whose ground truth is the model's own 20 best detections (over both
    # images): each category's best detections are exactly its ground truth, so AP is 1 at
    # every IoU threshold.
    from PIL import Image as PILImage

    PILImage.fromarray(shapes.generate_example(1, 'test', image_size=96)['image']).save(
        images / 'b.png'
    )
    results = predict_files(load_predictor(tmp_path / 'model', **sizes), [str(images)], tmp_path)
    files = ('a.png', 'b.png')
    coco = {
        'images': [
            {'id': i + 1, 'file_name': f, 'height': 96, 'width': 96} for i, f in enumerate(files)
        ],
        'categories': [{'id': i, 'name': n} for i, n in enumerate(label_maps.COCO91.names)],
        'annotations': [],
    }
    for r in sorted(results, key=lambda r: -r['score'])[:20]:
        coco['annotations'].append(
            {
                'id': len(coco['annotations']) + 1,
                'image_id': files.index(r['file_name']) + 1,
                'iscrowd': 0,
                'category_id': r['category_id'],
                'bbox': r['bbox'],
            }
        )
    (tmp_path / 'gt.json').write_text(json.dumps(coco))
    options = {'annotations': {'val': str(tmp_path / 'gt.json')}, 'image_dir': str(images)}
    metrics = evaluate_run(
        tmp_path / 'retinanet.pth',
        'val',
        dataset='coco_folder',
        dataset_options=options,
        out=tmp_path / 'eval.json',
        **sizes,
    )
    assert metrics['dataset'] == 'coco_folder' and metrics['step'] is None
    np.testing.assert_allclose([metrics['AP'], metrics['AP50'], metrics['AP75']], 1.0)
    assert json.loads((tmp_path / 'eval.json').read_text())['AP'] == metrics['AP']


def command_help(name: str) -> tuple[str, set[str]]:
    """A command's --help text (commands/command.py, in this process) and the flags it takes."""
    import contextlib
    import importlib
    import io

    from absl import flags

    from retinanet_jax.commands import command

    module = importlib.import_module(f'retinanet_jax.commands.{name}')
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert command.run(module, [name, '--help'], name) == 0
    fv = flags.FlagValues()
    if getattr(module, 'TAKES_CONFIG', False):
        command.define_config_flag(fv, [name])
    module.define_flags(fv)
    return text.getvalue(), {fv[f].name for f in fv}


SHARED = {  # the shared flags each command takes (commands/command.py)
    'train': {'config', 'workdir', 'compilation_cache'},
    'predict': {'model', 'weights', 'variant', 'short_side', 'max_side', 'compilation_cache'},
    'evaluate': {'model', 'weights', 'split', 'dataset', 'batch_size', 'pr_iou'},
    'analyze': {'model', 'weights', 'split', 'dataset', 'dataset_options', 'compilation_cache'},
    'export': {'model', 'weights', 'variant', 'compilation_cache'},
    'convert': {'input', 'output', 'variant'},
    'anchors': {'config', 'split', 'max_images'},
    'show_data': {'config', 'split', 'out', 'num_images'},
}


@pytest.mark.parametrize('name', sorted(SHARED))
def test_each_command_help_lists_every_flag_it_takes_and_no_library_flags(name):
    from retinanet_jax.commands import COMMANDS

    assert set(SHARED) == set(COMMANDS)
    text, taken = command_help(name)
    assert SHARED[name] <= taken
    listed = {
        line.split(':')[0].strip()[2:] for line in text.splitlines() if line.startswith('  --')
    }
    assert listed == taken, listed ^ taken
    assert text.splitlines()[0].strip() and 'python' in text  # the summary and its command lines
    for library in (
        'grain',
        'jax_',
        'xla',
        'flagfile',
        'undefok',
        'only_check_args',
        'logtostderr',
    ):
        assert f'--{library}' not in text


def test_the_entry_points_list_and_run_the_commands_and_only_user_errors_are_one_line(tmp_path):
    """`python -m retinanet_jax --help` and the console script list the commands; a command's
    bad input is one line and exit status 1; any other exception (a library bug, here a
    ValueError injected into the model-path reading) keeps its traceback."""
    from retinanet_jax.commands import COMMANDS

    script = Path(sys.executable).with_name('retinanet-jax')
    bug = (
        'import sys; from retinanet_jax.inference import model_path\n'
        'def resolve(model): raise ValueError("an injected bug")\n'
        'model_path.resolve = resolve\n'
        'from retinanet_jax.__main__ import main\n'
        'sys.exit(main(sys.argv))\n'
    )
    listed, scripted, unknown, missing, bad, injected = run_commands(
        (('-m', 'retinanet_jax', '--help'), None),
        ((str(script), 'anchors', '--config=configs/smoke.py', '--max_images=4'), None),
        (('-m', 'retinanet_jax', 'trian'), None),
        (('-m', 'retinanet_jax', 'convert', f'--input={tmp_path}/x.pth'), None),
        (('-m', 'retinanet_jax', 'convert', f'--input={tmp_path}/x.pth', '--output=o'), None),
        (('-c', bug, 'predict', f'--model={tmp_path}', '--images=x', '--out=o'), None),
    )
    assert listed.returncode == 0 and all(f'  {name} ' in listed.stdout for name in COMMANDS)
    # the console script (made by pip install) reads a config that imports configs/, as
    # `python -m` and train.py do
    assert scripted.returncode == 0 and 'proposed' in scripted.stdout, scripted.stderr[-2000:]
    assert unknown.returncode == 2 and "no command 'trian'" in unknown.stderr
    assert_clear_failure(missing, 'convert: ', '--output')
    assert_clear_failure(bad, 'convert: state dict file not found', 'x.pth')
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert injected.returncode == 1 and 'Traceback' in injected.stderr
    from retinanet_jax.commands import anchors, command

    argv = ['anchors', '--config=configs/smoke.py', '--max_images=2', f'--out={tmp_path}/no/x.json']
    assert command.run(anchors, argv, 'anchors') == 1  # a path that cannot be written: one line
    assert 'ValueError: an injected bug' in injected.stderr


@pytest.mark.parametrize('config', ['configs/shapes.py', 'configs/coco.py', 'configs/voc.py'])
def test_the_documented_evaluation_and_init_overrides_parse_on_the_shipped_configs(config):
    """README: --config.evaluation.max_detections (dense scenes), pr_iou / pr_score_threshold,
    --config.init.detector (fine-tuning), --config.postprocess.max_detections."""
    from absl import flags

    from retinanet_jax.commands import command

    argv = [
        'train.py',
        f'--config={config}',
        '--config.evaluation.max_detections=(1,10,1000)',
        '--config.evaluation.pr_iou=0.4',
        '--config.postprocess.max_detections=1000',
        '--config.init.detector=/models/retinanet.pth',
    ]
    fv = flags.FlagValues()
    command.define_config_flag(fv, argv)
    fv(argv)
    c = fv.config
    assert c.evaluation.max_detections == (1, 10, 1000) and c.evaluation.pr_iou == 0.4
    assert c.postprocess.max_detections == 1000 and c.init.detector == '/models/retinanet.pth'


def test_parse_takes_absl_syntax_and_names_what_is_unknown(tmp_path):
    """command.parse (what run does before the work): absl's flag syntax (a value as the next
    argument, even a negative one; --nobool; --flagfile), an unknown flag named with the
    nearest one before the config loads, an unknown config key with the nearest known key, and
    a bad preset field named by its config key."""
    from retinanet_jax import settings
    from retinanet_jax.commands import command, predict, train

    config = str(ROOT / 'configs' / 'smoke.py')
    argv = ['predict', '--model', 'm', '--images', 'a.png', '--out', 'o', '--min_score', '-0.5']
    fv = command.parse(predict, argv)
    assert fv.min_score == -0.5 and fv.images == ['a.png']
    fv = command.parse(
        train,
        ['train.py', '--config', config, '--workdir', str(tmp_path), '--config.loss.alpha', '-1'],
    )
    assert settings.from_config(fv.config).loss.alpha == -1
    flagfile = tmp_path / 'flags'
    flagfile.write_text(f'--workdir={tmp_path}\n')
    assert command.parse(train, ['train.py', f'--config={config}', f'--flagfile={flagfile}'])
    with pytest.raises(command.UsageError, match=r'unknown flag --wokdir \(did you mean --workdir'):
        command.parse(train, ['train.py', '--config', '/nonexistent.py', '--wokdir=x'])
    with pytest.raises(
        command.UsageError,
        match=r'no key optim\.weight_decy; the nearest known key: optim\.weight_decay',
    ):
        command.parse(
            train,
            ['train.py', '--config', config, '--workdir=w', '--config.optim.weight_decy=0.1'],
        )
    fv = command.parse(
        train, ['train.py', f'--config={config}', '--workdir=w', '--config.loss.gamma=-1']
    )
    with pytest.raises(ValueError, match=r'config\.loss\.gamma must be >= 0'):
        settings.from_config(fv.config)
