"""ResNet-18/34/50/101/152 backbone (torchvision's ResNet v1.5: stride on the 3x3 conv).

Input:  images [B, H, W, 3], normalised, float (NHWC).
Output: (C3, C4, C5) feature maps at strides 8, 16, 32, each [B, ceil(H/s), ceil(W/s), C] with
C = (128, 256, 512) for ResNet-18/34 and (512, 1024, 2048) for ResNet-50 and deeper.

`norm` is the normalisation after every convolution (see layers.py): 'frozen' batch norm (the
pretrained recipes), trainable 'batch' norm (synchronised over the global batch under jit), or
'group' norm (32 groups). `freeze_at` freezes the stem and the first stages as detectron2's
FREEZE_AT does: 0 nothing, 1 the stem, 2 the stem and layer1 (torchvision's
trainable_backbone_layers=3, the RetinaNet default), ..., 5 everything. A frozen stage freezes
its kernels and its normalisation alike: with norm='batch' its batch norms are FrozenBatchNorm
(fixed statistics and affine terms, as detectron2's convert_frozen_batchnorm); with 'group'
their scale and bias are Frozen.
Attribute names follow torchvision's, so weights map one to one (see torchvision_weights.py).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from retinanet_jax.errors import UserError
from retinanet_jax.models.layers import conv, freeze, make_norm, max_pool_3x3_s2

# depth -> (block type, blocks per stage)
SPECS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out', relu).
_KAIMING = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _conv(in_f, out_f, k, stride=1, *, dtype, rngs):
    return conv(
        in_f, out_f, k, stride=stride, use_bias=False, kernel_init=_KAIMING, dtype=dtype, rngs=rngs
    )


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, in_f: int, width: int, stride: int, *, norm, dtype, rngs: nnx.Rngs):
        out_f = width * self.expansion
        n = dict(dtype=dtype, rngs=rngs)
        self.conv1 = _conv(in_f, width, 3, stride, **n)
        self.bn1 = make_norm(norm, width, **n)
        self.conv2 = _conv(width, out_f, 3, **n)
        self.bn2 = make_norm(norm, out_f, **n)
        self.downsample = _Downsample(in_f, out_f, stride, norm=norm, **n)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + self.downsample(x))


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, in_f: int, width: int, stride: int, *, norm, dtype, rngs: nnx.Rngs):
        out_f = width * self.expansion
        n = dict(dtype=dtype, rngs=rngs)
        self.conv1 = _conv(in_f, width, 1, **n)
        self.bn1 = make_norm(norm, width, **n)
        self.conv2 = _conv(width, width, 3, stride, **n)
        self.bn2 = make_norm(norm, width, **n)
        self.conv3 = _conv(width, out_f, 1, **n)
        self.bn3 = make_norm(norm, out_f, **n)
        self.downsample = _Downsample(in_f, out_f, stride, norm=norm, **n)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return nnx.relu(y + self.downsample(x))


class _Downsample(nnx.Module):
    """The projection shortcut (1x1 conv + BN) where shape changes; identity otherwise."""

    def __init__(self, in_f: int, out_f: int, stride: int, *, norm, dtype, rngs: nnx.Rngs):
        self.active = stride != 1 or in_f != out_f
        if self.active:
            self.conv = _conv(in_f, out_f, 1, stride, dtype=dtype, rngs=rngs)
            self.bn = make_norm(norm, out_f, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x)) if self.active else x


class ResNet(nnx.Module):
    """ResNet trunk without the classifier; returns (C3, C4, C5)."""

    def __init__(
        self,
        depth: int = 50,
        *,
        freeze_at: int = 2,
        norm: str = 'frozen',
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if depth not in SPECS:
            raise UserError(f'ResNet depth must be one of {sorted(SPECS)}, got {depth}')
        if not 0 <= freeze_at <= 5:
            raise UserError(f'freeze_at must be in 0..5, got {freeze_at}')
        kind, blocks = SPECS[depth]
        block = BasicBlock if kind == 'basic' else Bottleneck

        def norm_of(stage: int) -> str:  # stage 0 is the stem
            return 'frozen' if norm == 'batch' and stage < freeze_at else norm

        self.depth = depth
        self.conv1 = _conv(3, 64, 7, 2, dtype=dtype, rngs=rngs)
        self.bn1 = make_norm(norm_of(0), 64, dtype=dtype, rngs=rngs)
        in_f = 64
        stages = []
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            layer = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layer.append(
                    block(in_f, width, stride, norm=norm_of(i + 1), dtype=dtype, rngs=rngs)
                )
                in_f = width * block.expansion
            stages.append(nnx.List(layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = tuple(w * block.expansion for w in (128, 256, 512))
        if freeze_at >= 1:
            freeze(self.conv1)
            freeze(self.bn1)
        for stage in stages[: max(freeze_at - 1, 0)]:
            for b in stage:
                freeze(b)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        x = max_pool_3x3_s2(nnx.relu(self.bn1(self.conv1(x))))
        outputs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for b in stage:
                x = b(x)
            outputs.append(x)
        return outputs[1], outputs[2], outputs[3]
