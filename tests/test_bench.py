"""The benchmark entry point runs (tiny sizes); benchmarks are never timed in tests."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_loss_quick_runs(tmp_path):
    out = tmp_path / 'loss.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'bench', 'loss', '--quick', '--json', str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'speed-up' in proc.stdout
    rows = json.loads(out.read_text())['loss']
    names = [r['name'] for r in rows]
    assert any(n.startswith('ours') for n in names) and any('torchvision' in n for n in names)
    assert all(r['median_ms'] > 0 and r['runs'] == 3 for r in rows)
