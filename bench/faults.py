"""Fault injection, measured: configs/smoke.py trained straight, then again under each fault at
random points, each run resumed with the same command until it finishes; every finished run is
compared bitwise (parameters, optimiser state, batch statistics) with the straight one.

  python -m bench faults [--quick]

  SIGKILL x10         killed at a random step (periodic checkpoints), then resumed
  SIGTERM x5          preempted at a random step (no periodic checkpoint): it saves the step
                      reached and exits 143; then resumed
  corrupt newest      killed, its newest checkpoint's arrays truncated to zero bytes: the
                      resumed run moves it aside and restores the one before
  non-finite batch    a NaN loss at a random step: the run stops naming it and leaves the last
                      good checkpoint; the resumed run (the fault was transient) goes on
  bad record, skip    one image file of a COCO folder turned to garbage, on_bad_record='skip':
                      killed and resumed, compared with a straight run that skips the same file

"steps lost" is the work redone after each fault: the step the run had reached when it stopped
minus the step it resumed from (0 when it saved the step it reached).
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OWN_TABLE = True  # bench/__main__.py prints this benchmark's table as it comes


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    del threads, device
    rng = np.random.default_rng(0)
    steps, every = (12, 4) if quick else (40, 8)
    counts = {'SIGKILL': 2, 'SIGTERM': 1} if quick else {'SIGKILL': 10, 'SIGTERM': 5}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = [
            f'--config.train_steps={steps}',
            f'--config.checkpoint_every={every}',
            f'--config.eval_every={steps}',
            '--config.log_every=1',
        ]
        straight = tmp / 'straight'
        assert train(straight, base).returncode == 0
        for kind in ('SIGKILL', 'SIGTERM'):
            args = base if kind == 'SIGKILL' else [*base[:1], f'--config.checkpoint_every={10**6}']
            for i, at in enumerate(rng.integers(2, steps - 1, counts[kind])):
                rows.append(signalled(tmp / f'{kind}-{i}', args, kind, int(at), straight))
        rows.append(
            corrupt_newest(tmp / 'corrupt', base, int(rng.integers(2 * every + 1, steps)), straight)
        )
        rows.append(non_finite(tmp / 'nan', base, int(rng.integers(every + 1, steps)), straight))
        rows.append(bad_record(tmp, base, int(rng.integers(2, steps - 1))))
    print(
        f'\n## faults (configs/smoke.py, {steps} steps)\n'
        '| fault | runs | finished bitwise equal | steps lost (each run) |\n|---|---|---|---|'
    )
    by_fault = {}
    for r in rows:
        by_fault.setdefault(r['fault'], []).append(r)
    for fault, rs in by_fault.items():
        equal = sum(r['equal'] for r in rs)
        lost = ', '.join(str(r['lost']) for r in rs)
        print(f'| {fault} | {len(rs)} | {equal} | {lost} |')
    return rows


def train(workdir: Path, args, watch=None, config='configs/smoke.py'):
    """python train.py (a CompletedProcess); `watch(step, proc)` is called as progress shows."""
    command = [sys.executable, 'train.py', f'--config={config}', f'--workdir={workdir}', *args]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    err = []

    def read():  # tqdm redraws with \r: the last "k/total" is the step the run had finished
        buffer = ''
        while chunk := proc.stderr.read(1):
            buffer += chunk
            if chunk in '\r\n':
                err.append(buffer)
                found = re.findall(r'\| *(\d+)/\d+ \[', buffer)
                if found and watch:
                    watch(int(found[-1]), proc)
                buffer = ''
        err.append(buffer)

    reader = threading.Thread(target=read)
    reader.start()
    out = proc.stdout.read()
    proc.wait()
    reader.join()
    return subprocess.CompletedProcess(command, proc.returncode, out, ''.join(err))


def killer(sig, at: int, seen: dict):
    def watch(step, proc):
        if step >= at and 'sent' not in seen:
            seen.update(sent=time.time(), reached=step)
            proc.send_signal(sig)

    return watch


def resumed_from(output: str) -> int:
    found = re.findall(r'resumed from .* at step (\d+)', output)
    return int(found[-1]) if found else 0


def signalled(workdir: Path, args, kind: str, at: int, straight: Path) -> dict:
    seen = {}
    stopped = train(workdir, args, watch=killer(getattr(signal, kind), at, seen))
    expected = -signal.SIGKILL if kind == 'SIGKILL' else 143
    assert stopped.returncode == expected, (stopped.returncode, stopped.stderr[-2000:])
    resumed = train(workdir, args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return {
        'fault': kind,
        'at': seen['reached'],
        'equal': same_run(workdir, straight),
        'lost': max(seen['reached'] - resumed_from(resumed.stdout), 0),
    }


def corrupt_newest(workdir: Path, args, at: int, straight: Path) -> dict:
    seen = {}
    train(workdir, args, watch=killer(signal.SIGKILL, at, seen))
    newest = max(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
    for p in (workdir / 'checkpoints' / str(newest) / 'model').rglob('*'):
        if p.is_file() and p.parent.name == 'd':
            p.write_bytes(b'')
    resumed = train(workdir, args)
    assert resumed.returncode == 0 and 'moved aside' in resumed.stderr, resumed.stderr[-2000:]
    return {
        'fault': 'corrupt newest checkpoint',
        'at': seen['reached'],
        'equal': same_run(workdir, straight),
        'lost': seen['reached'] - resumed_from(resumed.stdout),
    }


def non_finite(workdir: Path, args, at: int, straight: Path) -> dict:
    stopped = child(workdir, args, poison=[at])
    assert stopped.returncode != 0 and f'at step {at}' in stopped.stderr, stopped.stderr[-2000:]
    resumed = train(workdir, args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return {
        'fault': 'non-finite batch (transient)',
        'at': at,
        'equal': same_run(workdir, straight),
        'lost': at - resumed_from(resumed.stdout),
    }


def bad_record(tmp: Path, base, at: int) -> dict:
    from retinanet_jax.data import shapes_files

    folder = tmp / 'coco'
    options = shapes_files.write_coco_folder(folder, 20, not_in_validation=(7,))  # eval never skips
    (folder / 'images' / '7.png').write_bytes(b'garbage')  # bad before any read of it
    options['verify_images'] = False
    config = tmp / 'coco_smoke.py'
    config.write_text(
        'from configs import smoke\n\n\ndef get_config():\n    c = smoke.get_config()\n'
        f"    c.data.update(dataset='coco_folder', on_bad_record='skip', max_bad_fraction=0.1)\n"
        f'    c.data.options = {options!r}\n    return c\n'
    )
    args = dict(args=base, config=str(config))
    straight = tmp / 'bad-straight'
    assert train(straight, **args).returncode == 0
    seen = {}
    workdir = tmp / 'bad-killed'
    train(workdir, **args, watch=killer(signal.SIGKILL, at, seen))
    resumed = train(workdir, **args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    listed = json.loads((workdir / 'bad_records.json').read_text())
    assert [e['index'] for e in listed] == [7]
    return {
        'fault': "bad record, on_bad_record='skip'",
        'at': seen['reached'],
        'equal': same_run(workdir, straight),
        'lost': seen['reached'] - resumed_from(resumed.stdout),
    }


def child(workdir: Path, args, poison) -> subprocess.CompletedProcess:
    """The run in a process of its own with non-finite steps injected (testing/faults.py)."""
    code = (
        'import sys, runpy\n'
        'from retinanet_jax.testing import faults\n'
        'poison = set(map(int, sys.argv[1].split(",")))\n'
        'sys.argv = ["train.py", *sys.argv[2:]]\n'
        'with faults.non_finite_steps(poison):\n'
        '    runpy.run_path("train.py", run_name="__main__")\n'
    )
    command = [
        sys.executable,
        '-c',
        code,
        ','.join(map(str, poison)),
        '--config=configs/smoke.py',
        f'--workdir={workdir}',
        *args,
    ]
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, 'PYTHONPATH': str(ROOT)},
    )


def same_run(a: Path, b: Path) -> bool:
    """Whether two finished runs' last checkpoints hold the same bits (every item's arrays)."""
    import orbax.checkpoint as ocp

    from retinanet_jax import checkpoint

    def arrays(workdir):
        items = {name: ocp.args.StandardRestore() for name in ('model', 'optimizer')}
        with checkpoint.run_checkpoints(workdir) as manager:
            step = manager.latest_step()
            restored = manager.restore(step, args=ocp.args.Composite(**items))
        import jax

        return step, [np.asarray(x) for x in jax.tree.leaves(dict(restored.items()))]

    (step_a, xs), (step_b, ys) = arrays(a), arrays(b)
    return (
        step_a == step_b
        and len(xs) == len(ys)
        and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(xs, ys, strict=True))
    )
