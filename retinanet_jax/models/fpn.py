"""Feature pyramid: (C3, C4, C5) -> (P3, P4, P5, P6, P7), all with `width` channels (NHWC).

P5..P3: lateral 1x1 convs, top-down nearest upsampling to the lateral's exact size (so odd
sizes work: the index map is floor(i * in / out), as torch's F.interpolate(mode='nearest')),
then 3x3 output convs. No activation (as the paper and torchvision). `norm` 'none' (the paper)
puts no normalisation after the lateral and output convs; 'group' or 'batch' puts one after
each, and those convs drop their bias (detectron2's FPN(norm='GN' / 'SyncBN'), torchvision's
FeaturePyramidNetwork(norm_layer=...)); P6 and P7 never have one (LastLevelP6P7).
P6 is a 3x3 stride-2 conv on C5 (the paper; torchvision v2) or on P5 (torchvision v1);
P7 is a 3x3 stride-2 conv on ReLU(P6). Sizes: P_l is ceil(H / 2**l) x ceil(W / 2**l).
"""

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from retinanet_jax.errors import UserError
from retinanet_jax.models.layers import conv, make_norm

FPN_NORMS = ('none', 'group', 'batch')


def upsample_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour resize of [B, h, w, C] to [B, *size, C], torch 'nearest' semantics."""
    (h, w), (out_h, out_w) = x.shape[1:3], size
    if (out_h, out_w) == (2 * h, 2 * w):
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    rows = (np.arange(out_h) * h) // out_h
    cols = (np.arange(out_w) * w) // out_w
    return x[:, rows][:, :, cols]


class FPN(nnx.Module):
    def __init__(
        self,
        in_channels: tuple[int, int, int],
        width: int = 256,
        *,
        p6_from: Literal['c5', 'p5'] = 'c5',
        norm: Literal['none', 'group', 'batch'] = 'none',
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if p6_from not in ('c5', 'p5'):
            raise UserError(f"p6_from must be 'c5' or 'p5', got {p6_from!r}")
        if norm not in FPN_NORMS:
            raise UserError(f'FPN norm must be one of {FPN_NORMS}, got {norm!r}')
        self.p6_from = p6_from
        n = dict(dtype=dtype, rngs=rngs)
        bias = norm == 'none'
        self.inner_blocks = nnx.List([conv(c, width, 1, use_bias=bias, **n) for c in in_channels])
        self.layer_blocks = nnx.List(
            [conv(width, width, 3, use_bias=bias, **n) for _ in in_channels]
        )
        normed = norm != 'none'
        self.inner_norms = nnx.List([make_norm(norm, width, **n) for _ in in_channels if normed])
        self.layer_norms = nnx.List([make_norm(norm, width, **n) for _ in in_channels if normed])
        p6_in = in_channels[-1] if p6_from == 'c5' else width
        self.p6 = conv(p6_in, width, 3, stride=2, dtype=dtype, rngs=rngs)
        self.p7 = conv(width, width, 3, stride=2, dtype=dtype, rngs=rngs)

    def _lateral(self, i: int, x: jax.Array) -> jax.Array:
        x = self.inner_blocks[i](x)
        return self.inner_norms[i](x) if len(self.inner_norms) else x

    def _output(self, i: int, x: jax.Array) -> jax.Array:
        x = self.layer_blocks[i](x)
        return self.layer_norms[i](x) if len(self.layer_norms) else x

    def __call__(self, c3: jax.Array, c4: jax.Array, c5: jax.Array) -> list[jax.Array]:
        features = (c3, c4, c5)
        last = self._lateral(2, c5)
        outputs = [self._output(2, last)]
        for i in (1, 0):
            lateral = self._lateral(i, features[i])
            last = lateral + upsample_nearest(last, lateral.shape[1:3])
            outputs.insert(0, self._output(i, last))
        p6 = self.p6(c5 if self.p6_from == 'c5' else outputs[-1])
        p7 = self.p7(nnx.relu(p6))
        return [*outputs, p6, p7]
