"""Timing helpers: medians after warm-up, compile time reported apart."""

import dataclasses
import statistics
import time
from collections.abc import Callable


@dataclasses.dataclass
class Timing:
    name: str
    median_ms: float
    min_ms: float
    runs: int
    first_call_ms: float  # compile (jax) or first-call overhead (torch), measured apart
    reference: str | None = None  # for our rows: the name of the row to compare against
    peak_mib: float | None = None  # host RSS (CPU) or device memory (GPU), where measured
    flops: float | None = None  # per call, from XLA's cost analysis (our rows)
    extra: dict | None = None  # anything else a benchmark reports

    def row(self, peak_gflops: float | None = None) -> str:
        """A markdown row; with `peak_gflops`, the GFLOP/s and the share of that peak."""
        memory = '-' if self.peak_mib is None else f'{self.peak_mib:.0f}'
        rate = share = '-'
        if self.flops:
            gflops = self.flops / self.median_ms / 1e6
            rate = f'{gflops:.0f}'
            share = f'{gflops / peak_gflops:.0%}' if peak_gflops else '-'
        return (
            f'| {self.name} | {self.median_ms:.1f} | {self.min_ms:.1f} | {self.runs} '
            f'| {self.first_call_ms:.0f} | {memory} | {rate} | {share} |'
        )


def time_fn(
    name: str,
    fn: Callable[[], object],
    runs: int = 10,
    warmup: int = 2,
    reference: str | None = None,
) -> Timing:
    """Times `fn()` (which must block until its result is ready) `runs` times after a first
    call and `warmup` more (at most `runs`: --quick's single run is a check of the code)."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1e3
    for _ in range(min(warmup, runs)):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return Timing(name, statistics.median(samples), min(samples), runs, first, reference)


HEADER = (
    '| what | median ms | min ms | runs | first call ms | peak MiB | GFLOP/s | of peak |\n'
    '|---|---|---|---|---|---|---|---|'
)


def flops_of(program) -> float:
    """FLOPs of a lowered or compiled JAX program, from XLA's cost analysis (a dict, or a list
    of one dict per program on some versions)."""
    cost = program.cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)['flops']
