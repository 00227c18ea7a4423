"""The benchmark entry point runs (tiny sizes, every side in this test's process: a check of the
wiring); benchmarks are never timed in tests, their figures are in BENCHMARKS.md."""

import json

import pytest

from .helpers import require

NAMES = ('peak', 'loss', 'forward', 'input', 'postprocess', 'train_step', 'inference')


@pytest.mark.slow
def test_bench_all_quick_runs(tmp_path, capsys):
    require('torch', 'torchvision')  # every benchmark's reference side
    from bench.__main__ import main

    out = tmp_path / 'all.json'
    assert main(['all', '--quick', '--json', str(out)]) == 0
    stdout = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert set(NAMES) <= set(results) and results['cpu_peak_gflops'] > 0
    for name in NAMES:
        rows = results[name]
        compared = [r for r in rows if r['reference']]
        assert all(f'{r["name"]} vs {r["reference"]}' in stdout for r in compared), name
        names = [r['name'] for r in rows]
        if name != 'peak':
            assert compared and any(n.startswith('ours') for n in names), name
            assert any('torchvision' in n for n in names), name
        assert all(r['median_ms'] > 0 for r in rows), name
    train = {r['name']: r for r in results['train_step']}
    assert any('norm=batch' in n and train[n]['flops'] > 0 for n in train)
    assert '| GFLOP/s | of peak |' in stdout


def test_the_peers_installed_without_dependencies_leave_our_opencv():
    """SAHI (bench tiles) declares opencv-python, which would install OpenCV 5 beside our
    opencv-python-headless (<5, requirements.txt) and shadow it: it is installed with --no-deps
    (requirements-nodeps.txt), and cv2 stays the pinned one, from our distribution alone."""
    require('sahi')
    import importlib.metadata as metadata

    import cv2

    assert cv2.__version__.split('.')[0] == '4', cv2.__version__
    assert metadata.version('opencv-python-headless').startswith(cv2.__version__)
    installed = {d.metadata['Name'].lower() for d in metadata.distributions()}
    assert not installed & {'opencv-python', 'opencv-contrib-python'}, installed
