"""Start-up: from `train_and_evaluate` to the end of the first train step of configs/shapes.py,
with an empty persistent compilation cache and with a warm one (compilation_cache.py).

  python -m bench startup

Each run is `python train.py --config=configs/shapes.py --config.train_steps=1` in a fresh
process and workdir, its cache folder given by RETINANET_JAX_CACHE; the figure is the run's
`first_step_seconds` (metrics.json): reading the config, building the sources and the train
state, compiling (or loading) the step, and one step. The whole command's wall time (imports and
the final evaluation included) is printed too.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.timing import Timing

ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    del threads, device
    config = 'configs/smoke.py' if quick else 'configs/shapes.py'
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for label in ('cold cache', 'warm cache'):
            with tempfile.TemporaryDirectory() as workdir:
                start = time.perf_counter()
                proc = subprocess.run(
                    [
                        sys.executable,
                        'train.py',
                        f'--config={config}',
                        f'--workdir={workdir}',
                        '--config.train_steps=1',
                        '--config.eval_every=1',
                        '--config.checkpoint_every=1',
                    ],
                    cwd=ROOT,
                    env={**os.environ, 'RETINANET_JAX_CACHE': cache},
                    capture_output=True,
                    text=True,
                )
                command = time.perf_counter() - start
                if proc.returncode:
                    raise RuntimeError(proc.stderr[-3000:])
                first = json.loads((Path(workdir) / 'metrics.json').read_text())
                seconds = first['first_step_seconds']
            print(f'{label}: first step after {seconds:.1f} s; whole command {command:.1f} s')
            ms = seconds * 1e3
            name = f'{config}: first train step, {label}'
            rows.append(Timing(name, ms, ms, 1, 0.0, extra={'command_seconds': command}))
    rows[1].reference = rows[0].name
    return rows
