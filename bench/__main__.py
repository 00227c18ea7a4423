"""Benchmarks: `python -m bench {loss,train_step,inference,...,all} [--device cpu|gpu]`."""

import argparse
import importlib
import json
import os
import sys

BENCHMARKS = {
    'peak': 'bench.peak',
    'loss': 'bench.loss',
    'forward': 'bench.forward',
    'input': 'bench.input',
    'postprocess': 'bench.postprocess',
    'train_step': 'bench.train_step',
    'inference': 'bench.inference',
    'resume': 'bench.resume',
    'startup': 'bench.startup',
    'convs': 'bench.convs',
    'race': 'bench.race',
    'faults': 'bench.faults',
    'fed': 'bench.fed',
    'tiles': 'bench.tiles',
    'rasters': 'bench.rasters',
}
# Not part of `all` (run them by name): each starts or trains whole runs of its own, minutes.
SLOW = ('startup', 'convs', 'race', 'faults', 'fed', 'tiles', 'rasters')


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m bench', description=__doc__)
    parser.add_argument('name', choices=[*BENCHMARKS, 'all'])
    parser.add_argument('--quick', action='store_true', help='tiny sizes, few runs (a smoke test)')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
    parser.add_argument('--device', choices=['cpu', 'gpu'], default='cpu')
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument(
        '--compilation_cache',
        default=None,
        help='persistent XLA compilation cache folder (default: the tools\' own; "" for none, '
        'so that first-call figures are real compile times)',
    )
    return parser


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    from retinanet_jax import compilation_cache

    # Children (bench/isolated.py) read the same folder from the environment.
    os.environ[compilation_cache.ENV] = compilation_cache.enable(args.compilation_cache) or ''

    if args.quick:  # a smoke test of the code: every side in this process (bench/isolated.py)
        import torch  # noqa: F401  (before any tensorflow import)

        from bench import isolated

        isolated.IN_PROCESS = True
    if args.device == 'gpu':  # JAX here and PyTorch (in-process or in a child) share the GPU
        os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    from bench.timing import HEADER

    names = [n for n in BENCHMARKS if n not in SLOW] if args.name == 'all' else [args.name]
    everything = {}
    peak = None
    if args.device == 'cpu':  # every CPU row's GFLOP/s as a share of this, measured now
        from bench.peak import cpu_peak_gflops

        peak = cpu_peak_gflops(512 if args.quick else 4096)
        print(f'this CPU now: {peak:.0f} GFLOP/s fp32 (jnp.dot; python -m bench peak)')
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        results = module.run(quick=args.quick, threads=args.threads, device=args.device)
        if getattr(module, 'OWN_TABLE', False):  # not timings: it printed its own table
            everything[name] = results
            continue
        print(f'\n## {name}\n{HEADER}')
        for r in results:
            print(r.row(peak))
        by_name = {r.name: r for r in results}
        for r in results:
            if r.reference:
                ref = by_name[r.reference]
                print(f'{r.name} vs {ref.name}: {ref.median_ms / r.median_ms:.2f}x')
        everything[name] = [vars(r) for r in results]
    everything['cpu_peak_gflops'] = peak
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(everything, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
