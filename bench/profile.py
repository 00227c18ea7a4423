"""Where our train step's device time goes: a jax.profiler trace of a few steps, summed by
kernel (or XLA:CPU op) name and by kind.

  python -m bench.profile [--size 1024 --batch 16 --dtype bfloat16] [--trace_dir DIR]

Prints the busiest kernels and the share of convolutions / matrix products, fusions
(element-wise work XLA generated), reductions, copies and transposes, and the rest. Uses the
same step and synthetic batch as `python -m bench train_step`.
"""

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile

KINDS = [
    ('convolution / matmul (cuDNN, cuBLAS, cutlass)', r'convolution|cudnn|gemm|cutlass|xmma|nvjet'),
    ('transpose / copy', r'transpose|copy|memcpy|memset'),
    ('reduction', r'reduce|reduction'),
    ('fusion (XLA element-wise)', r'fusion|loop_|input_'),
]


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return 'other'


def summarise(trace_file: str, steps: int, top: int = 25) -> None:
    with gzip.open(trace_file, 'rt') as f:
        events = json.load(f)['traceEvents']
    processes = {
        e['pid']: e['args']['name']
        for e in events
        if e.get('ph') == 'M' and e.get('name') == 'process_name'
    }
    device = [p for p, n in processes.items() if re.search(r'/device:(GPU|gpu)', n)]
    if not device:  # CPU: XLA ops run on host threads
        device = [p for p, n in processes.items() if 'host' in n.lower()]
    kernels = [e for e in events if e.get('ph') == 'X' and e.get('pid') in device]
    by_name = collections.Counter()
    for e in kernels:
        by_name[e['name']] += e.get('dur', 0)
    total = sum(by_name.values())
    print(f'device processes: {[processes[p] for p in device]}')
    print(f'{len(kernels)} events, {total / 1e3 / steps:.1f} ms of kernel time per step')
    by_kind = collections.Counter()
    for name, us in by_name.items():
        by_kind[kind_of(name)] += us
    for kind, us in by_kind.most_common():
        print(f'  {kind:48s} {us / 1e3 / steps:8.2f} ms/step {100 * us / total:5.1f} %')
    print(f'top {top} kernels (ms/step, share):')
    for name, us in by_name.most_common(top):
        print(f'  {us / 1e3 / steps:8.3f} {100 * us / total:5.1f} %  {name[:110]}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--dtype', default='bfloat16')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--trace_dir', default=None)
    args = parser.parse_args()

    import jax
    import numpy as np

    from bench.train_step import ours_setup, synthetic_boxes

    rng = np.random.default_rng(0)
    boxes, labels = synthetic_boxes(rng, args.size, args.batch)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    _, compiled, state, data, _ = ours_setup(images, boxes, labels, args.dtype)
    for _ in range(3):
        state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    trace_dir = args.trace_dir or tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.steps):
            state, metrics = compiled(state, data)
        jax.block_until_ready(metrics)
    (trace,) = glob.glob(f'{trace_dir}/**/perfetto_trace.json.gz', recursive=True)
    print(f'trace: {trace}')
    summarise(trace, args.steps)


if __name__ == '__main__':
    main()
