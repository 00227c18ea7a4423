"""RetinaNet R50-FPN forward (backbone + FPN + heads, float32) at 512x512, against torchvision.

  ours         jax.jit of the merged NNX model (nnx.split once, merge inside the jitted call),
               with the package's compiler options (compiler_options.py)
  torchvision  retinanet_resnet50_fpn backbone + head under torch.inference_mode()
Both with the same randomly initialised weights (converted), batch 1 and 2, on the same input.
"""

import dataclasses
import functools
import time


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from torchvision.models.detection import retinanet_resnet50_fpn

    from bench.timing import flops_of, time_fn
    from retinanet_jax.models.torchvision_weights import retinanet_from_torchvision

    torch.set_num_threads(threads)
    size, runs, batches = (64, 1, (1,)) if quick else (512, 10, (1, 2))
    torch.manual_seed(0)
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None).eval()
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
    if device == 'gpu':
        reference = reference.cuda()
    graphdef, state = nnx.split(retinanet_from_torchvision(state_dict, 'v1'))

    from retinanet_jax import compiler_options

    def forward(state, images):
        return nnx.merge(graphdef, state)(images)

    forward = jax.jit(forward, compiler_options=compiler_options.default())

    results = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size)
        xj = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
        x = x.cuda() if device == 'gpu' else x
        start = time.perf_counter()
        compiled = forward.lower(state, xj).compile()
        compile_ms = (time.perf_counter() - start) * 1e3
        ref_name = f'torchvision: forward {size}x{size} batch {batch}'
        t = time_fn(
            f'ours: forward {size}x{size} batch {batch}',
            functools.partial(lambda c, a: jax.block_until_ready(c(state, a)), compiled, xj),
            runs,
            reference=ref_name,
        )
        flops = flops_of(compiled)
        results.append(dataclasses.replace(t, first_call_ms=compile_ms, flops=flops))
        results.append(time_fn(ref_name, functools.partial(torch_forward, reference, x), runs))
    return results


def torch_forward(model, x):
    import torch

    with torch.inference_mode():
        out = model.head(list(model.backbone(x).values()))
    if x.is_cuda:
        torch.cuda.synchronize()
    return out
