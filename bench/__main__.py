"""Benchmark entry point: `python -m bench {loss,all} [--quick] [--threads N]`."""

import argparse
import importlib
import json
import sys

BENCHMARKS = {
    'loss': 'bench.loss',
    'forward': 'bench.forward',
    'input': 'bench.input',
    'postprocess': 'bench.postprocess',
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench', description=__doc__)
    parser.add_argument('name', choices=[*BENCHMARKS, 'all'])
    parser.add_argument('--quick', action='store_true', help='tiny sizes, few runs (a smoke test)')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
    parser.add_argument('--json', help='also write the results to this JSON file')
    args = parser.parse_args(argv)

    from bench.timing import HEADER

    names = list(BENCHMARKS) if args.name == 'all' else [args.name]
    everything = {}
    for name in names:
        results = importlib.import_module(BENCHMARKS[name]).run(
            quick=args.quick, threads=args.threads
        )
        print(f'\n## {name}\n{HEADER}')
        for r in results:
            print(r.row())
        by_name = {r.name: r for r in results}
        for r in results:
            if r.reference:
                ref = by_name[r.reference]
                print(f'{r.name} vs {ref.name}: {ref.median_ms / r.median_ms:.2f}x')
        everything[name] = [vars(r) for r in results]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(everything, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
