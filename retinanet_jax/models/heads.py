"""The RetinaNet class and box subnets, shared over pyramid levels.

Each subnet: `depth` x (3x3 conv, `width` channels [+ GroupNorm(32)] + ReLU), then a 3x3 conv to
A * outputs channels. Applied to every level [B, h_l, w_l, C] and flattened to
[B, sum_l h_l * w_l * A, outputs] in level -> row -> column -> anchor order, the order of
`anchors.generate_anchors`. Channel a * outputs + j of the last conv is output j of anchor a
(as torchvision's view(N, A, K, H, W)).

Initialisation (paper, sec. 4.1): conv weights N(0, 0.01), biases 0, except the class output
bias, -log((1 - pi) / pi) with pi = 0.01, so every anchor starts at foreground probability pi.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from retinanet_jax.models.layers import conv

_NORMAL_001 = nnx.initializers.normal(0.01)


class Subnet(nnx.Module):
    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_outputs: int,
        *,
        width: int = 256,
        depth: int = 4,
        group_norm: bool = False,
        output_bias: float = 0.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_outputs = num_outputs
        convs, norms = [], []
        for i in range(depth):
            c_in = in_channels if i == 0 else width
            convs.append(
                conv(
                    c_in,
                    width,
                    3,
                    use_bias=not group_norm,
                    kernel_init=_NORMAL_001,
                    dtype=dtype,
                    rngs=rngs,
                )
            )
            if group_norm:
                norms.append(
                    nnx.GroupNorm(width, num_groups=32, epsilon=1e-5, dtype=dtype, rngs=rngs)
                )
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        # The output conv returns float32 whatever `dtype` is: logits and deltas feed the loss
        # and box decoding directly. It convolves in `dtype` (a float32 convolution of this
        # size cost ~13 ms of a 70 ms bf16 train step on an H100) and adds its bias in float32.
        self.output = conv(
            width if depth else in_channels,
            num_anchors * num_outputs,
            3,
            kernel_init=_NORMAL_001,
            bias_init=nnx.initializers.constant(output_bias),
            dtype=dtype,
            output_dtype=jnp.float32,
            rngs=rngs,
        )

    def __call__(self, features: list[jax.Array]) -> jax.Array:
        outputs = []
        for x in features:
            for i, c in enumerate(self.convs):
                x = c(x)
                if len(self.norms):
                    x = self.norms[i](x)
                x = nnx.relu(x)
            x = self.output(x)
            outputs.append(x.reshape(x.shape[0], -1, self.num_outputs))
        return jnp.concatenate(outputs, axis=1)


def class_prior_bias(prior_probability: float = 0.01) -> float:
    """-log((1 - pi) / pi): the class bias that makes sigmoid(logit) = pi at initialisation."""
    return -math.log((1.0 - prior_probability) / prior_probability)
