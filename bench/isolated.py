"""Runs one side of a benchmark in its own Python process, so that each side's peak memory
(host RSS on CPU, device memory on GPU) is its own and JAX and PyTorch never share a GPU.

The parent calls `measure(module, side, **options)`; the child (`python -m <module> side
--options JSON`) calls the module's `child(side, **options)`, which returns a Timing plus
extras, and prints them as the last line of its output. With IN_PROCESS set (`--quick`, a
smoke test of the benchmark code), `measure` calls `child` in this process instead: no process
start-ups, and no memory figures worth reading.
"""

import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from bench.timing import Timing

ROOT = Path(__file__).resolve().parents[1]
MARK = 'BENCH-RESULT '
IN_PROCESS = False


def measure(module: str, side: str, env: dict | None = None, **options) -> Timing:
    if IN_PROCESS and not env:  # (a side that needs its own environment gets its own process)
        import importlib

        return dataclasses.replace(importlib.import_module(module).child(side, **options))
    env = {
        **os.environ,
        'XLA_PYTHON_CLIENT_PREALLOCATE': 'false',
        'PYTHONUNBUFFERED': '1',
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, '-m', module, side, json.dumps(options)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = proc.stdout.splitlines()
    results = [line[len(MARK) :] for line in lines if line.startswith(MARK)]
    if proc.returncode or not results:
        raise RuntimeError(f'{module} {side} {options} failed:\n' + '\n'.join(lines[-40:]))
    for line in lines:
        if not line.startswith(MARK):
            print(f'  [{side}] {line}')
    return Timing(**json.loads(results[-1]))


def child_main(child) -> None:
    """`python -m bench.X side '{options}'` -> prints the child's Timing as JSON."""
    from retinanet_jax import compilation_cache

    compilation_cache.enable()  # the parent's folder, through the environment
    side, options = sys.argv[1], json.loads(sys.argv[2])
    timing = child(side, **options)
    if timing.peak_mib is None:  # host RSS (KiB on Linux)
        timing = dataclasses.replace(
            timing, peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
    print(MARK + json.dumps(dataclasses.asdict(timing)), flush=True)


def xla_memory_mib(compiled) -> float:
    """Device memory one call of a compiled JAX function needs (XLA's buffer assignment:
    arguments + outputs - donated + temporaries). JAX's allocator peak would also count the
    compile-time autotuning scratch, which PyTorch's figure (after warm-up) does not."""
    m = compiled.memory_analysis()
    used = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return (used + m.temp_size_in_bytes) / 2**20


def torch_peak_mib(fn, runs: int = 2) -> float:
    """PyTorch's peak allocated device memory over `runs` calls of `fn`, after a warm-up call."""
    import torch

    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(runs):
        fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def time_torch(fn, runs: int, device: str) -> Timing:
    """The torchvision side's Timing; on a GPU with its peak device memory."""
    from bench.timing import time_fn

    t = time_fn('torchvision', fn, runs)
    if device == 'gpu':
        t.peak_mib = torch_peak_mib(fn)
    return t
