"""Where the CPU train step's convolution time goes, layer by layer, against torch (oneDNN).

  python -m bench convs       (R50-FPN train step at 512x512, batch 2, float32, the coco recipe)

For every distinct convolution of the step (shape, stride, how often it occurs, whether its
data and weight gradients are needed: the stem and layer1 are frozen), the forward, the data
gradient and the weight gradient are timed alone, each jitted with the package's compiler
options (1x1 convolutions as matrix products, as in the model: models/layers.py), and the same
three with torch.nn.functional.conv2d and autograd on 2 threads (torch's gradients are timed
with their forward, whose time is then taken off). The table sums them, times the
count, per step: the share of the step that convolutions take, and which of the three kernels
XLA:CPU loses on.
"""

from bench.timing import Timing, time_fn

# (name, input H = W, Cin, Cout, kernel, stride, count, data gradient, weight gradient)
R50_FPN_512 = [
    ('stem 7x7/2', 512, 3, 64, 7, 2, 1, False, False),
    ('layer1 1x1 64>64', 128, 64, 64, 1, 1, 1, False, False),
    ('layer1 3x3 64', 128, 64, 64, 3, 1, 3, False, False),
    ('layer1 1x1 64>256', 128, 64, 256, 1, 1, 4, False, False),
    ('layer1 1x1 256>64', 128, 256, 64, 1, 1, 2, False, False),
    ('layer2.0 1x1 256>128', 128, 256, 128, 1, 1, 1, False, True),
    ('layer2.0 3x3/2 128', 128, 128, 128, 3, 2, 1, True, True),
    ('layer2.0 down 1x1/2 256>512', 128, 256, 512, 1, 2, 1, False, True),
    ('layer2 1x1 128>512', 64, 128, 512, 1, 1, 4, True, True),
    ('layer2 1x1 512>128', 64, 512, 128, 1, 1, 3, True, True),
    ('layer2 3x3 128', 64, 128, 128, 3, 1, 3, True, True),
    ('layer3.0 1x1 512>256', 64, 512, 256, 1, 1, 1, True, True),
    ('layer3.0 3x3/2 256', 64, 256, 256, 3, 2, 1, True, True),
    ('layer3.0 down 1x1/2 512>1024', 64, 512, 1024, 1, 2, 1, True, True),
    ('layer3 1x1 256>1024', 32, 256, 1024, 1, 1, 6, True, True),
    ('layer3 1x1 1024>256', 32, 1024, 256, 1, 1, 5, True, True),
    ('layer3 3x3 256', 32, 256, 256, 3, 1, 5, True, True),
    ('layer4.0 1x1 1024>512', 32, 1024, 512, 1, 1, 1, True, True),
    ('layer4.0 3x3/2 512', 32, 512, 512, 3, 2, 1, True, True),
    ('layer4.0 down 1x1/2 1024>2048', 32, 1024, 2048, 1, 2, 1, True, True),
    ('layer4 1x1 512>2048', 16, 512, 2048, 1, 1, 3, True, True),
    ('layer4 1x1 2048>512', 16, 2048, 512, 1, 1, 2, True, True),
    ('layer4 3x3 512', 16, 512, 512, 3, 1, 2, True, True),
    ('fpn lateral 1x1 512>256', 64, 512, 256, 1, 1, 1, True, True),
    ('fpn lateral 1x1 1024>256', 32, 1024, 256, 1, 1, 1, True, True),
    ('fpn lateral 1x1 2048>256', 16, 2048, 256, 1, 1, 1, True, True),
    ('fpn out / head 3x3 256 @64', 64, 256, 256, 3, 1, 9, True, True),
    ('fpn out / head 3x3 256 @32', 32, 256, 256, 3, 1, 9, True, True),
    ('fpn out / head 3x3 256 @16', 16, 256, 256, 3, 1, 9, True, True),
    ('fpn p6 3x3/2 2048>256', 16, 2048, 256, 3, 2, 1, True, True),
    ('fpn p7 3x3/2 256', 8, 256, 256, 3, 2, 1, True, True),
    ('head 3x3 256 @8', 8, 256, 256, 3, 1, 8, True, True),
    ('head 3x3 256 @4', 4, 256, 256, 3, 1, 8, True, True),
    ('cls out 3x3 256>720 @64', 64, 256, 720, 3, 1, 1, True, True),
    ('cls out 3x3 256>720 @32', 32, 256, 720, 3, 1, 1, True, True),
    ('box out 3x3 256>36 @64', 64, 256, 36, 3, 1, 1, True, True),
]
BATCH = 2


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    if device != 'cpu':
        raise SystemExit('bench convs: a CPU benchmark (it compares with torch on the CPU)')
    import torch

    torch.set_num_threads(threads)
    layers = R50_FPN_512[:4] if quick else R50_FPN_512
    runs = 2 if quick else 5
    totals = {'ours': 0.0, 'torch': 0.0}
    print('| conv | count | ours fwd / dgrad / wgrad ms | torch fwd / dgrad / wgrad ms |')
    print('|---|---|---|---|')
    for name, size, cin, cout, k, stride, count, dgrad, wgrad in layers:
        size = min(size, 64) if quick else size
        ours = _ours(size, cin, cout, k, stride, dgrad, wgrad, runs)
        ref = _torch(size, cin, cout, k, stride, dgrad, wgrad, runs)
        totals['ours'] += count * sum(t for t in ours if t)
        totals['torch'] += count * sum(t for t in ref if t)
        show = lambda ts: ' / '.join('-' if t is None else f'{t:.1f}' for t in ts)  # noqa: E731
        print(f'| {name} | {count} | {show(ours)} | {show(ref)} |', flush=True)
    print(f'per step, convolutions only: ours {totals["ours"]:.0f}, torch {totals["torch"]:.0f} ms')
    return [
        Timing(
            "ours: the step's convolutions, summed",
            totals['ours'],
            totals['ours'],
            runs,
            0.0,
            reference="torch: the step's convolutions, summed",
        ),
        Timing(
            "torch: the step's convolutions, summed", totals['torch'], totals['torch'], runs, 0.0
        ),
    ]


def _median(fn, runs) -> float:
    return time_fn('', fn, runs, warmup=1).median_ms


def _ours(size, cin, cout, k, stride, dgrad, wgrad, runs):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from retinanet_jax import compiler_options
    from retinanet_jax.models.layers import conv_general_dilated

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((BATCH, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) * 0.05, jnp.float32)
    pad = k // 2
    numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))

    def conv(x, w):
        return conv_general_dilated(
            x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=numbers
        )

    g = jnp.ones(jax.eval_shape(conv, x, w).shape, jnp.float32)
    options = compiler_options.default()
    fns = [jax.jit(conv, compiler_options=options)]
    fns.append(
        jax.jit(lambda x, w: jax.vjp(lambda x: conv(x, w), x)[1](g)[0], compiler_options=options)
        if dgrad
        else None
    )
    fns.append(
        jax.jit(lambda x, w: jax.vjp(lambda w: conv(x, w), w)[1](g)[0], compiler_options=options)
        if wgrad
        else None
    )
    return [
        None if f is None else _median(lambda f=f: f(x, w).block_until_ready(), runs) for f in fns
    ]


def _torch(size, cin, cout, k, stride, dgrad, wgrad, runs):
    import torch

    x = torch.randn(BATCH, cin, size, size, requires_grad=dgrad)
    w = (torch.randn(cout, cin, k, k) * 0.05).requires_grad_(wgrad)

    def forward():
        return torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2)

    with torch.no_grad():
        g = torch.ones_like(forward())

    def gradient(wrt):
        y = forward()
        return torch.autograd.grad(y, [wrt], g)

    times = [_median(lambda: torch.no_grad()(forward)(), runs)]
    times.append(_median(lambda: gradient(x), runs) - times[0] if dgrad else None)
    times.append(_median(lambda: gradient(w), runs) - times[0] if wgrad else None)
    return times
