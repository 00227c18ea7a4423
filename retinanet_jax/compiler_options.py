"""XLA compiler options that pay on the backend at hand, for every jitted step of this package
(train, predict, evaluate, bench): `jax.jit(fn, compiler_options=compiler_options.default())`.

CPU (XLA:CPU in jaxlib 0.10): convolutions are left to XLA's own (Eigen) kernels instead of
YNNPACK fusions, while dots and reductions stay with YNNPACK:
  xla_cpu_experimental_ynn_fusion_type = INDIVIDUAL_DOT, REDUCE   (default: also CONVOLUTION)
YNNPACK's convolution kernels are as fast as Eigen's forward but 2-3x slower on weight
gradients; the R50-FPN train step at 512x512, batch 2, went from 11.2 to 7.1 s with this
(BENCHMARKS.md, "CPU experiments"). Other backends: no options.

`run_once()` is for computations that run once per process, such as a train state's random
initialisation: on the CPU, LLVM at optimisation level 0. The smoke model's initialisation
compiled in 3.5 s instead of 19 s (it runs in ~1 s either way); the values agree with level 3's
to within one float32 ulp (LLVM contracts a few multiply-adds differently).
"""

import jax

CPU = {
    'xla_cpu_experimental_ynn_fusion_type': (
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'
    ),
}


def default(backend: str | None = None) -> dict:
    """The options for `backend` (default: JAX's default backend)."""
    backend = backend or jax.default_backend()
    return dict(CPU) if backend == 'cpu' else {}


def run_once(backend: str | None = None) -> dict:
    """Options for computations that run once per process (initialisation): compile time over
    run time."""
    backend = backend or jax.default_backend()
    return {'xla_backend_optimization_level': 0} if backend == 'cpu' else {}
