"""The benchmark entry point runs (tiny sizes, one process for all); benchmarks are never timed
in tests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ('peak', 'loss', 'forward', 'input', 'postprocess', 'train_step', 'inference')


@pytest.mark.slow
def test_bench_all_quick_runs(tmp_path):
    out = tmp_path / 'all.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'bench', 'all', '--quick', '--json', str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(NAMES) <= set(results) and results['cpu_peak_gflops'] > 0
    for name in NAMES:
        rows = results[name]
        compared = [r for r in rows if r['reference']]
        assert all(f'{r["name"]} vs {r["reference"]}' in proc.stdout for r in compared), name
        names = [r['name'] for r in rows]
        if name != 'peak':
            assert compared and any(n.startswith('ours') for n in names), name
            assert any('torchvision' in n for n in names), name
        assert all(r['median_ms'] > 0 for r in rows), name
    train = {r['name']: r for r in results['train_step']}
    assert any('norm=batch' in n and train[n]['flops'] > 0 for n in train)
    assert '| GFLOP/s | of peak |' in proc.stdout
