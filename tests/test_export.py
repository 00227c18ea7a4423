"""Export: the whole detector to StableHLO and ONNX, reloaded in fresh processes without this
package, against the JAX predictor."""

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinanet_jax import inference
from retinanet_jax.data import shapes
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.inference import export, tiling

from .helpers import doc_snippet, require

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh process with retinanet_jax made unimportable: the export folder's own
# detect.py (numpy, PIL, onnxruntime or jax) is all a user needs.
RELOAD = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    sys.modules['retinanet_jax'] = None  # any import of this package now fails
    folder, images_file, out, batches = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    spec = importlib.util.spec_from_file_location('detect', folder + '/detect.py')
    detect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detect)
    images = np.load(images_file)
    results = {}
    for fmt in sys.argv[5:]:
        run = detect.load(__import__('pathlib').Path(folder), fmt)
        for n in map(int, batches.split(',')):
            for name, value in zip(('boxes', 'scores', 'labels', 'count'), run(images[:n])):
                results[f'{fmt}_{n}_{name}'] = np.asarray(value)
    np.savez(out, **results)
""")


TILED_ONNX = ('--format', 'onnx', '--tile_size', '128', '--tile_overlap', '0.25')


def reload_in_fresh_process(
    folder: Path, images: np.ndarray, tmp_path: Path, formats, batches=(1, 3)
) -> dict:
    """Each format's detections for the first n images, for n in `batches` (one dynamic-batch
    export run at each), from a fresh process: {f'{format}_{n}_{name}': array}."""
    np.save(tmp_path / 'images.npy', images)
    out = tmp_path / 'reloaded.npz'
    proc = subprocess.run(
        [
            sys.executable,
            '-c',
            RELOAD,
            str(folder),
            str(tmp_path / 'images.npy'),
            str(out),
            ','.join(map(str, batches)),
            *formats,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


def reference(predictor, images: np.ndarray) -> dict:
    """The JAX predictor's detections (inference.make_predict_step) on images already at the
    export size (scale 1, so original pixels are input pixels)."""
    hw = images.shape[1:3]
    step = inference.make_predict_step(
        predictor.graphdef, hw, predictor.anchors, predictor.postprocess, predictor.mesh
    )
    n = len(images)
    batch = {
        'image': images,
        'content_size': np.tile(np.int32(hw), (n, 1)),
        'scale': np.ones((n, 2), np.float32),
    }
    from retinanet_jax import sharding

    return sharding.to_local(
        step(predictor.state, sharding.to_global(batch, predictor.mesh)), predictor.mesh
    )


def assert_same_detections(want: dict, got: dict, prefix: str, score_tol=1e-4, box_tol=1e-3):
    """The same detections, in order; detections whose scores tie to within score_tol may come
    in either order (the runtimes round differently)."""
    count = got[f'{prefix}_count']
    np.testing.assert_array_equal(count, want['valid'].sum(1), err_msg=prefix)
    for i, n in enumerate(count):
        scores = want['scores'][i, :n]
        np.testing.assert_allclose(
            got[f'{prefix}_scores'][i, :n], scores, atol=score_tol, err_msg=prefix
        )
        unused = set(range(n))
        for k in range(n):
            label, box = got[f'{prefix}_labels'][i, k], got[f'{prefix}_boxes'][i, k]
            same = [
                j
                for j in sorted(unused)
                if abs(scores[j] - got[f'{prefix}_scores'][i, k]) <= score_tol
                and want['labels'][i, j] == label
                and np.allclose(want['boxes'][i, j], box, rtol=0, atol=box_tol)
            ]
            assert same, f'{prefix}: image {i} detection {k} ({label}, {box}) is not expected'
            unused.remove(same[0])
        assert (got[f'{prefix}_labels'][i, n:] == -1).all()  # empty slots


def shapes_images(n=3, size=128):
    return np.stack(
        [shapes.generate_example(i, 'validation', image_size=size)['image'] for i in range(n)]
    )


@pytest.mark.slow
def test_smoke_model_exports_to_both_formats_and_matches_the_predictor(tmp_path, smoke_run):
    require('jax2onnx', 'onnxruntime')
    out = tmp_path / 'export'
    command = [
        sys.executable,
        '-m',
        'retinanet_jax',
        'export',
        f'--model={smoke_run[0]}',
        f'--out={out}',
        '--image_size=128,128',
        '--score_threshold=0.001',
    ]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, 'PYTHONPATH': str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'exported stablehlo, onnx (128x128, batch dynamic)' in proc.stdout
    manifest = json.loads((out / 'export.json').read_text())
    assert manifest['names'] == ['circle', 'square', 'triangle'] and manifest['batch'] == 'dynamic'
    assert {p.name for p in out.iterdir()} == {
        'detector.onnx',
        'detector.stablehlo',
        'export.json',
        'detect.py',
        'tile_merge.py',
    }

    images = shapes_images()
    got = reload_in_fresh_process(out, images, tmp_path, ['onnx', 'stablehlo'])
    predictor = inference.load_predictor(smoke_run[0])
    post = dataclasses.replace(predictor.postprocess, score_threshold=0.001)
    predictor = dataclasses.replace(predictor, postprocess=post)
    want = reference(predictor, images)
    assert want['valid'].sum() > 30  # (a 4-step model: its scores are low)
    for fmt in ('onnx', 'stablehlo'):
        for n in (1, 3):
            assert_same_detections({k: v[:n] for k, v in want.items()}, got, f'{fmt}_{n}')

    # docs/deploy.md's onnxruntime snippet on this export: the first image's detections
    Image.fromarray(images[0]).save(tmp_path / 'photo.png')
    code = doc_snippet('onnxruntime').replace('/tmp/shapes_export', str(out))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code.replace("'photo.jpg'", repr(str(tmp_path / 'photo.png'))), {})
    lines = printed.getvalue().splitlines()
    assert len(lines) == want['valid'][0].sum() and lines[0].split()[0] in manifest['names']

    # detect.py --tile_size on a larger image: the windows, their detections and the merge of
    # predict_tiled at the export's canvas (128, scale 1), through onnxruntime and the copy of
    # tile_merge.py beside it.
    large = np.concatenate([np.concatenate(list(shapes_images(3, 128)), 1)] * 2)[:200, :300]
    Image.fromarray(large).save(tmp_path / 'large.png')
    proc = subprocess.run(
        [sys.executable, str(out / 'detect.py'), str(tmp_path / 'large.png'), *TILED_ONNX],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)['detections']
    canvas = InputConfig(image_size=(128, 128), short_side=128, max_side=128, flip=False)
    (tiled,) = tiling.predict_tiled(
        dataclasses.replace(predictor, input=canvas), [large], tiling.TileConfig(128, 0.25, 3)
    )  # (batches of 3: the reference's program)
    assert len(got) == len(tiled['boxes']) > 30
    # (near-equal scores may come in either order: compare in an order of their own)
    mine = sorted((d['label'], *d['box'], d['score']) for d in got)
    want = sorted(
        (manifest['names'][k], *b.tolist(), float(s))
        for b, s, k in zip(tiled['boxes'], tiled['scores'], tiled['labels'], strict=True)
    )
    assert [m[0] for m in mine] == [w[0] for w in want]
    np.testing.assert_allclose([m[1:] for m in mine], [w[1:] for w in want], atol=0.02)

    # Another export into the same folder is refused, unless asked for.
    with pytest.raises(ValueError, match=r'holds another export .* overwrite=True'):
        export.export_model(predictor, out, ('stablehlo',), (128, 128), 2)
    export.export_model(predictor, out, ('stablehlo',), (128, 128), 2, overwrite=True)
    assert json.loads((out / 'export.json').read_text())['batch'] == 2


def test_export_bad_input_says_why(tmp_path, smoke_run):
    predictor = inference.load_predictor(smoke_run[0])
    with pytest.raises(ValueError, match=r"formats: unknown \['tflite'\]; known: stablehlo, onnx"):
        export.export_model(predictor, tmp_path / 'a', ('tflite',))
    with pytest.raises(ValueError, match=r'image size 100x128: .*multiple of 32.*e\.g\. 128,128'):
        export.export_model(predictor, tmp_path / 'b', ('stablehlo',), (100, 128))
    (tmp_path / 'c').mkdir()
    (tmp_path / 'c' / 'notes.txt').write_text('mine')
    with pytest.raises(ValueError, match='not empty and holds no export'):
        export.export_model(predictor, tmp_path / 'c', ('stablehlo',), (128, 128))
    empty_run = tmp_path / 'run'
    (empty_run / 'checkpoints').mkdir(parents=True)
    (empty_run / 'config.json').write_text((smoke_run[0] / 'config.json').read_text())
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'retinanet_jax',
            'export',
            f'--model={empty_run}',
            f'--out={tmp_path / "d"}',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert f'export: {empty_run}/checkpoints holds no checkpoint' in proc.stderr


@pytest.mark.slow
def test_torchvision_r50_exports_with_parity_at_256(tmp_path):
    """A torchvision retinanet_resnet50_fpn (random weights, random BN statistics, class bias
    -2 so that every level's top-k fills) converted, exported to ONNX and run in onnxruntime:
    its own kernels and NMS at full scale. (StableHLO runs the very program that XLA compiles
    for the predictor; its reload is the smoke model's test.)"""
    require('torch', 'torchvision', 'jax2onnx', 'onnxruntime')
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn

    from .test_models import randomise_batch_norm

    torch.manual_seed(0)
    reference_model = retinanet_resnet50_fpn(weights=None, weights_backbone=None).eval()
    randomise_batch_norm(reference_model)
    with torch.no_grad():
        reference_model.head.classification_head.cls_logits.bias.fill_(-2.0)
    torch.save(reference_model.state_dict(), tmp_path / 'r50.pth')
    predictor = inference.load_predictor(tmp_path / 'r50.pth', short_side=256, max_side=256)
    assert predictor.image_hw == (256, 256)
    export.export_model(predictor, tmp_path / 'export', ('onnx',))
    images = np.concatenate(
        [
            shapes_images(1, 256),
            shapes_images(2, 256)[1:],
            np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8),
        ]
    )
    # Batch 3 only: batch 1 of the dynamic export is the smoke model's test.
    got = reload_in_fresh_process(tmp_path / 'export', images, tmp_path, ['onnx'], batches=(3,))
    want = reference(predictor, images)
    assert (want['valid'].sum(1) == 100).all()  # a busy case: every slot used
    assert_same_detections(want, got, 'onnx_3')
