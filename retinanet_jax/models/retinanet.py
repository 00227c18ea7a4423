"""The RetinaNet detector (forward only), its ModelConfig, and `build_retinanet`, the one place a
ModelConfig becomes modules (outside a trace: one compiled initialisation; inside jax.jit: op
by op; under nnx.eval_shape: shapes and dtypes only, to restore or convert weights into).

  model(images [B, H, W, 3] float, normalised) -> {
      'cls_logits': [B, R, K] float32 (no sigmoid),
      'box_deltas': [B, R, 4] float32 (dx, dy, dw, dh),
  }
with R = anchors.num_anchors((H, W), anchor_config) and rows in the order of
`anchors.generate_anchors`. Losses (losses.py) and post-processing stay outside the module.
Parameters are float32; `dtype='bfloat16'` computes convolutions in bfloat16 and returns
float32 outputs. With trainable batch norm (ModelConfig.norm / fpn_norm 'batch') the model has
two modes: `model.train()` (the state after build_retinanet; batch statistics, running ones
updated) and `model.eval()` (running statistics), for prediction, evaluation and export.
"""

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from retinanet_jax import compiler_options
from retinanet_jax.errors import UserError
from retinanet_jax.models.fpn import FPN, FPN_NORMS
from retinanet_jax.models.heads import Subnet, class_prior_bias
from retinanet_jax.models.layers import GROUPS, NORMS
from retinanet_jax.models.resnet import SPECS, ResNet


class RetinaNet(nnx.Module):
    def __init__(
        self,
        *,
        backbone: ResNet,
        fpn: FPN,
        classification_head: Subnet,
        regression_head: Subnet,
        num_classes: int,
    ):
        self.backbone = backbone
        self.fpn = fpn
        self.classification_head = classification_head
        self.regression_head = regression_head
        self.num_classes = num_classes

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        _check_images(images)
        c3, c4, c5 = self.backbone(images)
        features = self.fpn(c3, c4, c5)
        return {
            'cls_logits': self.classification_head(features).astype(jnp.float32),
            'box_deltas': self.regression_head(features).astype(jnp.float32),
        }


def _check_images(images) -> None:
    shape = getattr(images, 'shape', None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise UserError(f'RetinaNet expects images of shape [B, H, W, 3] (NHWC, RGB), got {shape}')
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise UserError(
            f'RetinaNet expects floating-point, normalised images, got dtype {images.dtype} '
            '(convert and normalise uint8 images first)'
        )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every architectural setting. Defaults: the paper's R50-FPN (P6 from C5), frozen BN.

    norm: the backbone's normalisation, 'frozen' (FrozenBatchNorm, the pretrained recipes),
      'batch' (trainable, synchronised BatchNorm; running statistics in the train state) or
      'group' (GroupNorm, 32 groups). fpn_norm: 'none' (the paper), 'group' or 'batch' after
      the FPN's lateral and output convs (detectron2's FPN.NORM). head_group_norm: GroupNorm
      in the class and box subnets (torchvision v2).
    """

    num_classes: int = 80
    depth: int = 50
    freeze_at: int = 2
    norm: Literal['frozen', 'batch', 'group'] = 'frozen'
    fpn_width: int = 256
    fpn_norm: Literal['none', 'group', 'batch'] = 'none'
    head_depth: int = 4
    head_group_norm: bool = False
    p6_from: Literal['c5', 'p5'] = 'c5'
    num_anchors: int = 9
    prior_probability: float = 0.01
    dtype: Literal['float32', 'bfloat16'] = 'float32'

    def __post_init__(self):
        def check(ok: bool, field: str, message: str):
            if not ok:
                raise UserError(f'ModelConfig.{field} {message}, got {getattr(self, field)!r}')

        check(self.num_classes >= 1, 'num_classes', 'must be >= 1')
        check(self.depth in SPECS, 'depth', f'must be one of {sorted(SPECS)}')
        check(0 <= self.freeze_at <= 5, 'freeze_at', 'must be in 0..5')
        check(self.norm in NORMS, 'norm', f'must be one of {NORMS}')
        check(self.fpn_norm in FPN_NORMS, 'fpn_norm', f'must be one of {FPN_NORMS}')
        check(self.p6_from in ('c5', 'p5'), 'p6_from', "must be 'c5' or 'p5'")
        check(self.dtype in ('float32', 'bfloat16'), 'dtype', "must be 'float32' or 'bfloat16'")
        check(self.head_depth >= 0, 'head_depth', 'must be >= 0')
        grouped = [
            k
            for k, on in [
                ('head_group_norm', self.head_group_norm),
                ('fpn_norm', self.fpn_norm == 'group'),
            ]
            if on
        ]
        for key in grouped:
            if self.fpn_width % GROUPS:
                raise UserError(
                    f'ModelConfig.{key} uses GroupNorm with {GROUPS} groups: fpn_width must be a '
                    f'multiple of {GROUPS}, got {self.fpn_width}'
                )

    @classmethod
    def torchvision_v1(cls, num_classes: int = 91) -> 'ModelConfig':
        """retinanet_resnet50_fpn: P6 from P5, no head norm."""
        return cls(num_classes=num_classes, p6_from='p5')

    @classmethod
    def torchvision_v2(cls, num_classes: int = 91) -> 'ModelConfig':
        """retinanet_resnet50_fpn_v2: P6 from C5, GroupNorm in the heads."""
        return cls(num_classes=num_classes, p6_from='c5', head_group_norm=True)


def build_retinanet(config: ModelConfig, *, seed: int = 0) -> RetinaNet:
    """The RetinaNet of `config` (in training mode: `model.eval()` for inference), its
    parameters drawn from `seed`.

    Outside a trace the initialisation runs as one compiled computation
    (compiler_options.run_once) rather than op by op: on the CPU a ResNet-18 model builds in
    seconds instead of ~20 s of compiling each initialiser's ops. Inside a trace (jax.jit,
    nnx.eval_shape) the modules are built op by op as part of it: `nnx.eval_shape(lambda:
    build_retinanet(config))` gives the model with shapes and dtypes only, nothing computed."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f'build_retinanet takes a ModelConfig, got {type(config).__name__}')
    if isinstance(jnp.zeros(()), jax.core.Tracer):  # inside a trace: part of it
        return _modules(config, seed)
    initialise, structure = _initializer(config)
    state = initialise(jax.random.key(seed))  # traces once: records the graphdef
    return nnx.merge(structure['graphdef'], state)


@functools.lru_cache(maxsize=8)
def _initializer(config: ModelConfig):
    """(jit(key) -> the state of `config`'s modules, {'graphdef': their structure}): compiled
    once per config in a process, the seed's key an argument (a second model of the same
    config, another seed or not, costs no compilation). The one trace records the graphdef."""
    structure = {}

    def init(key):
        structure['graphdef'], state = nnx.split(_modules(config, key))
        return state

    return jax.jit(init, compiler_options=compiler_options.run_once()), structure


def _modules(config: ModelConfig, seed: int | jax.Array) -> RetinaNet:
    """The modules built op by op (`seed`: an int or its jax.random.key)."""
    dtype = jnp.dtype(config.dtype)
    rngs = nnx.Rngs(seed)
    backbone = ResNet(
        config.depth, freeze_at=config.freeze_at, norm=config.norm, dtype=dtype, rngs=rngs
    )
    fpn = FPN(
        backbone.out_channels,
        config.fpn_width,
        p6_from=config.p6_from,
        norm=config.fpn_norm,
        dtype=dtype,
        rngs=rngs,
    )
    head = dict(
        width=config.fpn_width,
        depth=config.head_depth,
        group_norm=config.head_group_norm,
        dtype=dtype,
        rngs=rngs,
    )
    return RetinaNet(
        backbone=backbone,
        fpn=fpn,
        classification_head=Subnet(
            config.fpn_width,
            config.num_anchors,
            config.num_classes,
            output_bias=class_prior_bias(config.prior_probability),
            **head,
        ),
        regression_head=Subnet(config.fpn_width, config.num_anchors, 4, **head),
        num_classes=config.num_classes,
    )
