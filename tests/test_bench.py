"""The benchmark entry point runs (tiny sizes); benchmarks are never timed in tests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    'name', ['loss', 'forward', 'input', 'postprocess', 'train_step', 'inference']
)
def test_bench_quick_runs(tmp_path, name):
    out = tmp_path / f'{name}.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'bench', name, '--quick', '--json', str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())[name]
    compared = [r for r in rows if r['reference']]
    assert compared and all(f'{r["name"]} vs {r["reference"]}' in proc.stdout for r in compared)
    names = [r['name'] for r in rows]
    assert any(n.startswith('ours') for n in names) and any('torchvision' in n for n in names)
    assert all(r['median_ms'] > 0 and r['runs'] == 3 for r in rows)
