"""analysis.analyze_run on the smoke run: every file, the confusion matrix's object count,
and the metrics agreeing with the run's own final evaluation (the same EMA weights)."""

import json

import numpy as np
import pytest
from PIL import Image

from retinanet_jax.data import sources
from retinanet_jax.evaluation.analysis import analyze_run


def test_analyze_writes_every_file_and_agrees_with_evaluate(tmp_path, smoke_run):
    workdir, summary = smoke_run
    out = tmp_path / 'analysis'
    # the smoke model is barely trained: every detection counts, so that there are errors
    result = analyze_run(workdir, out=out, score_threshold=0.0, worst=3)
    for name in ('metrics.json', 'confusion_matrix.json', 'errors.json', 'worst/index.json'):
        assert (out / name).is_file(), name
    for name in ('confusion_matrix.png', 'pr_curves.png', 'errors.png'):
        with Image.open(out / name) as picture:
            assert picture.mode == 'RGB' and min(picture.size) > 200, name

    config = json.loads((workdir / 'config.json').read_text())
    source = sources.make_source(config['data']['dataset'], **config['data']['options'])
    truth = list(source.ground_truth('validation'))
    objects = sum(int(np.sum(~np.asarray(r['is_crowd'], bool))) for r in truth)
    confusion = json.loads((out / 'confusion_matrix.json').read_text())
    matrix = np.asarray(confusion['matrix'])
    assert matrix.shape == (4, 4) and confusion['columns'][-1] == 'missed'
    assert matrix[:-1].sum() == objects == confusion['objects'] > 0

    # the run's last evaluation was of the same weights (the EMA's, as analyze takes them)
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['AP'] == pytest.approx(summary['ema/AP'], abs=1e-6)
    errors = json.loads((out / 'errors.json').read_text())
    for name, ap50 in errors['AP50'].items():
        if ap50 >= 0:
            assert ap50 == pytest.approx(summary[f'ema/AP50/{name}'], abs=1e-6), name
    assert set(errors['dAP']) == {'cls', 'loc', 'both', 'dupe', 'bkg', 'miss'}
    assert result['errors'] == errors

    worst = json.loads((out / 'worst' / 'index.json').read_text())
    assert 1 <= len(worst) <= 3
    assert [w['errors'] for w in worst] == sorted((w['errors'] for w in worst), reverse=True)
    for w in worst:
        with Image.open(out / 'worst' / w['file']) as picture:  # 64x64, enlarged 4x, twice
            assert picture.size == (512, 256)
