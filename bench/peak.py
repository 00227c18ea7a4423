"""This machine's peak: large matrix products, fp32 and bf16, in JAX and in torch.

  python -m bench peak

The CPU tables report each of our rows' achieved GFLOP/s (XLA's cost analysis) as a share of
`cpu_peak_gflops()`, the fp32 jnp.dot figure measured here in the same run (machines like this
one, shared and virtual, move by 10-30 % between hours).
"""

import functools

from bench.timing import time_fn

SIZE = 4096


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    del device
    import torch

    from bench.timing import Timing

    torch.set_num_threads(threads)
    size = 512 if quick else SIZE
    rows = []
    for dtype in ('float32', 'bfloat16'):
        for name, fn in (('jnp.dot', _jax_dot), ('torch.matmul', _torch_matmul)):
            ms, first = fn(size, dtype, 3 if quick else 10)
            flops = 2 * size**3
            rows.append(
                Timing(
                    f'{name} {size}x{size} {dtype}', ms, ms, 3 if quick else 10, first, flops=flops
                )
            )
            print(f'{name} {dtype}: {flops / ms / 1e6:.0f} GFLOP/s')
    return rows


@functools.cache
def cpu_peak_gflops(size: int = SIZE) -> float:
    """The fp32 jnp.dot GFLOP/s of this machine now (median of a few products)."""
    ms, _ = _jax_dot(size, 'float32', 5)
    return 2 * size**3 / ms / 1e6


def _median_ms(fn, runs):
    """(median ms, first call ms) of fn after one warm-up call."""
    t = time_fn('', fn, runs, warmup=1)
    return t.median_ms, t.first_call_ms


def _jax_dot(size, dtype, runs):
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((size, size)), dtype) for _ in range(2))
    dot = jax.jit(jnp.dot)
    return _median_ms(lambda: dot(a, b).block_until_ready(), runs)


def _torch_matmul(size, dtype, runs):
    import torch

    a, b = (torch.randn(size, size, dtype=getattr(torch, dtype)) for _ in range(2))
    return _median_ms(lambda: torch.matmul(a, b), runs)
