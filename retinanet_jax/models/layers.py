"""Shared layers: normalisation (frozen / trainable batch norm, group norm), convolution with
torchvision padding, freezing.

Variable types decide what trains (the optimizer is built with `wrt=nnx.Param`):
  nnx.Param      trained weights
  Frozen         weights that are never trained: frozen batch-norm scale / bias, and every
                 kernel of the stages `freeze_at` freezes. They count as parameters (as
                 torchvision's frozen `requires_grad=False` weights do) but get no update.
  nnx.BatchStat  running mean / variance of batch norm (statistics, not parameters): fixed in
                 FrozenBatchNorm, updated by BatchNorm in training mode.
All tensors are NHWC; kernels are HWIO.

Normalisation kinds (`make_norm`):
  'frozen'  FrozenBatchNorm: y = x * scale + shift with fixed statistics (torchvision's
            FrozenBatchNorm2d; the pretrained recipes).
  'batch'   BatchNorm: torchvision's nn.BatchNorm2d (momentum 0.1, eps 1e-5). In training mode
            (`model.train()`, the default) it normalises with the statistics of the batch and
            updates the running ones; in eval mode (`model.eval()`) it uses the running ones.
            Under jax.jit with the batch split over devices (the ('data',) mesh of
            sharding.py) the batch mean and variance are reductions over the *global* batch:
            synchronised batch norm, with no extra code.
  'group'   GroupNorm with 32 groups, eps 1e-5 (torch.nn.GroupNorm(32, C)).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from retinanet_jax.errors import UserError

# torchvision's FPN init: kaiming_uniform_(a=1), i.e. uniform with variance 1 / fan_in.
KAIMING_UNIFORM_A1 = nnx.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
ZEROS = nnx.initializers.zeros_init()


class Frozen(nnx.Variable):
    """A weight that is loaded or initialised but never updated by the optimizer."""


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    stride: int = 1,
    use_bias: bool = True,
    kernel_init=KAIMING_UNIFORM_A1,
    bias_init=ZEROS,
    dtype=jnp.float32,
    output_dtype=None,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A square convolution with torchvision's symmetric padding k // 2 (not XLA's 'SAME',
    which pads stride-2 convolutions asymmetrically). Parameters are float32; `dtype` is the
    dtype of the operands (inputs and kernel). `output_dtype` (default `dtype`): the dtype of
    the bias and of the result. With bfloat16 operands and a float32 output the convolution
    itself stays bfloat16 (on a GPU, cuDNN has no bf16-in / f32-out kernel and XLA would fall
    back to a float32 one at several times the cost) and the bias is added in float32, so a
    large bias (the class prior, -4.6) is not rounded to bfloat16."""
    pad = kernel_size // 2
    mixed = {}
    if output_dtype is not None and jnp.dtype(output_dtype) != jnp.dtype(dtype):
        if not use_bias:  # the bias add is what makes the result output_dtype
            raise ValueError('conv: output_dtype other than dtype needs use_bias=True')
        mixed = dict(promote_dtype=_operands_in(dtype))
        dtype = output_dtype
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        conv_general_dilated=conv_general_dilated,
        rngs=rngs,
        **mixed,
    )


def conv_general_dilated(
    inputs,
    kernel,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """lax.conv_general_dilated, with float32 1x1 convolutions (NHWC, HWIO, no padding,
    dilation or groups) computed as matrix products: on XLA:CPU a 1x1 convolution's gradients
    run as convolutions at a third of the speed of the same products (BENCHMARKS.md)."""
    one_by_one = (
        kernel.shape[:2] == (1, 1)
        and inputs.dtype == kernel.dtype == jnp.float32  # (bf16: the GPU path, left to XLA)
        and dimension_numbers is not None
        and tuple(dimension_numbers.lhs_spec) == (0, 3, 1, 2)  # NHWC
        and tuple(dimension_numbers.rhs_spec) == (3, 2, 0, 1)  # HWIO
        and feature_group_count == 1
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and (padding == 'VALID' or all(tuple(p) == (0, 0) for p in padding))
    )
    if not one_by_one:
        return jax.lax.conv_general_dilated(
            inputs,
            kernel,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    sh, sw = window_strides
    if (sh, sw) != (1, 1):
        inputs = inputs[:, ::sh, ::sw, :]
    # As a 2-D [N*H*W, C] @ [C, D] product: with the batch and spatial dimensions kept apart,
    # the weight gradient contracts three dimensions and XLA:CPU ran it 3.6x slower (36 vs
    # 10 ms for 2x64x64x128 -> 512).
    n, h, w, c = inputs.shape
    outputs = jax.lax.dot_general(
        inputs.reshape(n * h * w, c),
        kernel[0, 0],
        (((1,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=kwargs.get('preferred_element_type'),
    )
    return outputs.reshape(n, h, w, kernel.shape[-1])


def _operands_in(dtype):
    """nnx.Conv's promote_dtype hook: inputs and kernel in `dtype`, the bias left as it is."""

    def promote(arrays, dtype_=None, inexact=True, **_):
        inputs, kernel, bias = arrays
        return inputs.astype(dtype), kernel.astype(dtype), bias

    return promote


class FrozenBatchNorm(nnx.Module):
    """Batch norm with fixed statistics and affine terms, as torchvision's FrozenBatchNorm2d:
    y = x * scale + shift, scale = weight / sqrt(running_var + eps), shift = bias - mean * scale.
    """

    def __init__(self, features: int, *, eps: float = 1e-5):
        self.eps = eps
        self.scale = Frozen(jnp.ones((features,), jnp.float32))
        self.bias = Frozen(jnp.zeros((features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.scale[...] * jax.lax.rsqrt(self.var[...] + self.eps)
        shift = self.bias[...] - self.mean[...] * scale
        # The affine step runs in float32 (fused into the conv's epilogue by XLA): in bfloat16
        # the per-channel scale alone would carry a relative error of up to 2^-8.
        return (x.astype(jnp.float32) * scale + shift).astype(x.dtype)


class BatchNorm(nnx.Module):
    """Trainable batch norm over [..., C] (NHWC), as torch.nn.BatchNorm2d.

    Training mode (`use_running_average=False`): normalises with the batch mean and biased
    variance over every axis but the last, and updates the running statistics with
    momentum 0.1 as torch does: mean <- 0.9 mean + 0.1 batch_mean, var <- 0.9 var + 0.1
    batch_var * n / (n - 1) (torch keeps the unbiased variance). Eval mode: the running
    statistics. Statistics and the affine step are float32 whatever the input dtype.
    """

    def __init__(
        self,
        features: int,
        *,
        momentum: float = 0.1,
        eps: float = 1e-5,
        use_running_average: bool = False,
    ):
        self.momentum = momentum
        self.eps = eps
        self.use_running_average = use_running_average
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axis=axes)
            # E[x^2] - E[x]^2: one fused pass over x (as flax's default fast variance).
            var = jnp.maximum(jnp.mean(jnp.square(xf), axis=axes) - jnp.square(mean), 0.0)
            n = x.size // x.shape[-1]
            m = self.momentum
            batch_mean, batch_var = jax.lax.stop_gradient((mean, var))
            self.mean[...] = (1 - m) * self.mean[...] + m * batch_mean
            self.var[...] = (1 - m) * self.var[...] + m * batch_var * (n / max(n - 1, 1))
        scale = self.scale[...] * jax.lax.rsqrt(var + self.eps)
        shift = self.bias[...] - mean * scale
        return (xf * scale + shift).astype(x.dtype)


NORMS = ('frozen', 'batch', 'group')
GROUPS = 32  # GroupNorm's group count (the paper of GroupNorm, detectron2, torchvision v2)


def make_norm(kind: str, features: int, *, dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Module:
    """A normalisation layer over `features` channels: 'frozen', 'batch' or 'group'."""
    if kind == 'frozen':
        return FrozenBatchNorm(features)
    if kind == 'batch':
        return BatchNorm(features)
    if kind == 'group':
        if features % GROUPS:
            raise UserError(f'GroupNorm needs channels divisible by {GROUPS}, got {features}')
        return nnx.GroupNorm(
            features,
            num_groups=GROUPS,
            epsilon=1e-5,
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
    raise UserError(f'unknown norm {kind!r}; known: {NORMS}')


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torch's MaxPool2d(3, stride=2, padding=1) of [B, H, W, C]: pad with -inf, then a VALID
    window (the form exporters translate exactly; jax2onnx drops explicit max-pool padding).

    Its gradient (custom): each output's gradient goes to the first input of its window that
    equals the maximum, as XLA's select-and-scatter does, written as nine strided masks: on
    XLA:CPU select-and-scatter took 90 ms for a [16, 64, 64, 64] input, this 18 ms."""
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    return nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='VALID')


def _max_pool_fwd(x):
    y = max_pool_3x3_s2(x)
    return y, (x, y)


def _max_pool_bwd(residuals, g):
    x, y = residuals
    (h, w), (ho, wo) = x.shape[1:3], y.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    dx = jnp.zeros(padded.shape, g.dtype)
    taken = jnp.zeros(y.shape, bool)
    zero = jnp.zeros((), g.dtype)
    for i in range(3):
        for j in range(3):
            tap = padded[:, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2]
            hit = (tap == y) & ~taken
            taken = taken | hit
            # The tap's gradients back onto the input grid (stride 2 = interior padding 1).
            rows = (i, h + 2 - i - (2 * ho - 1), 1)
            cols = (j, w + 2 - j - (2 * wo - 1), 1)
            dx = dx + jax.lax.pad(jnp.where(hit, g, zero), zero, [(0, 0, 0), rows, cols, (0, 0, 0)])
    return (dx[:, 1:-1, 1:-1],)


max_pool_3x3_s2.defvjp(_max_pool_fwd, _max_pool_bwd)


def freeze(module: nnx.Module) -> None:
    """Turns every nnx.Param under `module` into a Frozen variable, in place."""
    for _, sub in nnx.iter_modules(module):
        for name, value in list(vars(sub).items()):
            if isinstance(value, nnx.Param):
                setattr(sub, name, Frozen(value[...]))
