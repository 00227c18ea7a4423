"""Anchor generation: a static numpy constant per (image size, AnchorConfig).

Output: `generate_anchors(image_hw, config) -> [R, 4]` float32, xyxy in absolute input-image
pixels, ordered level -> row -> column -> anchor, and within one location ratio-major,
scale-minor (anchor a = ratio_index * num_scales + scale_index). This is the order in which the
model's heads emit `cls_logits` / `box_deltas`, so row r of the anchors and row r of the head
outputs describe the same box.

Level l has a grid of ceil(H / 2**l) x ceil(W / 2**l) cells: exactly the feature map size a
ResNet + FPN with stride-2, padding-1 convolutions produces for any input size. Canvas sides
must be multiples of 32 (`check_image_size`), the backbone's deepest stride (C5), so that the
FPN's top-down pathway doubles each grid exactly; P6 and P7 then round up (a 416 canvas: 52,
26, 13, 7 and 4 cells).

Conventions the references disagree on are explicit fields:
  offset:            anchor centres at (i + offset) * stride. pytorch-retinanet: 0.5 (the cell
                     centre); torchvision and detectron2: 0.
  truncate_sizes:    torchvision builds its sizes as int(size * scale) (40 and 50, not 40.3 and
                     50.8, at level 3).
  round_base_anchors: torchvision rounds the zero-centred base anchors to whole pixels.
  stride:            'level': 2**l, the feature map's own stride (the paper, detectron2,
                     pytorch-retinanet). 'image_over_grid': torchvision's H // grid_h and
                     W // grid_w per level, which differ from 2**l where a side is not a
                     multiple of 2**l's grid (a 416 canvas: 59 at P6 and 104 at P7, not 64
                     and 128).
"""

import dataclasses
import functools
from typing import Literal

import numpy as np

from retinanet_jax.errors import UserError

STRIDES = ('level', 'image_over_grid')
CANVAS_MULTIPLE = 32  # canvas sides: multiples of the backbone's deepest stride (C5)


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """How anchors are laid out. The defaults are the paper's (see `paper()`)."""

    min_level: int = 3
    max_level: int = 7
    # Side length of the scale-1, ratio-1 anchor at each level, min_level first.
    sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
    scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    # Aspect ratio = height / width.
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    offset: float = 0.5
    truncate_sizes: bool = False
    round_base_anchors: bool = False
    stride: Literal['level', 'image_over_grid'] = 'level'

    def __post_init__(self):
        num_levels = self.max_level - self.min_level + 1
        if num_levels < 1:
            raise UserError(
                f'AnchorConfig: max_level ({self.max_level}) < min_level ({self.min_level})'
            )
        if len(self.sizes) != num_levels:
            raise UserError(
                f'AnchorConfig.sizes has {len(self.sizes)} entries; levels '
                f'{self.min_level}..{self.max_level} need {num_levels}'
            )
        if not self.scales or not self.aspect_ratios:
            raise UserError('AnchorConfig.scales and AnchorConfig.aspect_ratios must be non-empty')
        if min(self.sizes) <= 0 or min(self.scales) <= 0 or min(self.aspect_ratios) <= 0:
            raise UserError('AnchorConfig sizes, scales and aspect_ratios must all be positive')
        if self.stride not in STRIDES:
            raise UserError(f'AnchorConfig.stride must be one of {STRIDES}, got {self.stride!r}')

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.aspect_ratios)

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(self.min_level, self.max_level + 1))

    @classmethod
    def paper(cls) -> 'AnchorConfig':
        """The paper's anchors (sec. 4): areas 32^2..512^2 on P3-P7, three scales, three ratios.

        The paper does not state a centre offset; we put anchors at cell centres (offset 0.5), the
        geometrically centred choice, and keep exact (unrounded) sizes.
        """
        return cls()

    @classmethod
    def pytorch_retinanet(cls) -> 'AnchorConfig':
        """The reference pytorch-retinanet `Anchors`: offset 0.5, exact scales, no rounding."""
        return cls(offset=0.5, truncate_sizes=False, round_base_anchors=False)

    @classmethod
    def torchvision(cls) -> 'AnchorConfig':
        """torchvision's `_default_anchorgen`: int-truncated sizes, rounded base anchors, offset 0,
        strides image // grid (see the module docstring)."""
        return cls(
            offset=0.0, truncate_sizes=True, round_base_anchors=True, stride='image_over_grid'
        )


def level_grid_sizes(
    image_hw: tuple[int, int], config: AnchorConfig
) -> tuple[tuple[int, int], ...]:
    """Feature-map (rows, cols) at each level: ceil(H / 2**l), ceil(W / 2**l)."""
    h, w = _check_image_hw(image_hw)
    return tuple((-(-h // 2**level), -(-w // 2**level)) for level in config.levels)


def anchors_per_level(image_hw: tuple[int, int], config: AnchorConfig) -> tuple[int, ...]:
    """Anchors at each level, in anchor order (what post-processing splits the rows by)."""
    a = config.num_anchors_per_location
    return tuple(gh * gw * a for gh, gw in level_grid_sizes(image_hw, config))


def num_anchors(image_hw: tuple[int, int], config: AnchorConfig) -> int:
    """Total anchor count R for an image size (99,765 for 640x832 with the default config)."""
    return sum(anchors_per_level(image_hw, config))


def base_anchors(level_index: int, config: AnchorConfig) -> np.ndarray:
    """The [A, 4] xyxy anchors of one location centred at (0, 0), ratio-major, scale-minor."""
    size = config.sizes[level_index]
    scales = np.asarray(config.scales, np.float64) * size
    if config.truncate_sizes:
        scales = np.asarray([int(size * s) for s in config.scales], np.float64)
    h_ratios = np.sqrt(np.asarray(config.aspect_ratios, np.float64))
    w_ratios = 1.0 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    anchors = np.stack([-ws, -hs, ws, hs], axis=1) / 2.0
    if config.round_base_anchors:
        anchors = np.round(anchors)
    return anchors


def generate_anchors(
    image_hw: tuple[int, int], config: AnchorConfig = AnchorConfig()
) -> np.ndarray:
    """All anchors of an image size.

    Args:
      image_hw: (height, width) of the (padded) network input, in pixels. Static.
      config: anchor layout.

    Returns:
      [R, 4] float32 xyxy, read-only, ordered level -> row -> column -> anchor.
    """
    return _generate_anchors(_check_image_hw(image_hw), config)


@functools.lru_cache(maxsize=64)
def _generate_anchors(image_hw: tuple[int, int], config: AnchorConfig) -> np.ndarray:
    per_level = []
    for i, (level, (gh, gw)) in enumerate(
        zip(config.levels, level_grid_sizes(image_hw, config), strict=True)
    ):
        stride_y, stride_x = level_strides(image_hw, level, (gh, gw), config)
        ys = (np.arange(gh, dtype=np.float64) + config.offset) * stride_y
        xs = (np.arange(gw, dtype=np.float64) + config.offset) * stride_x
        cy, cx = np.meshgrid(ys, xs, indexing='ij')
        shifts = np.stack([cx, cy, cx, cy], axis=-1).reshape(-1, 1, 4)
        per_level.append((shifts + base_anchors(i, config)[None]).reshape(-1, 4))
    anchors = np.concatenate(per_level).astype(np.float32)
    anchors.flags.writeable = False
    return anchors


def level_strides(image_hw, level: int, grid_hw, config: AnchorConfig) -> tuple[int, int]:
    """(stride_y, stride_x) of `level` in pixels, by config.stride (see the module docstring)."""
    if config.stride == 'image_over_grid':
        return image_hw[0] // grid_hw[0], image_hw[1] // grid_hw[1]
    return 2**level, 2**level


def check_image_size(image_hw) -> tuple[int, int]:
    """(H, W) if each side is a positive multiple of CANVAS_MULTIPLE (32, the backbone's
    deepest stride: what torchvision pads its inputs to), else a UserError saying so and
    suggesting the next size up."""
    h, w = _check_image_hw(image_hw)
    if h % CANVAS_MULTIPLE or w % CANVAS_MULTIPLE:
        up = padded_size((h, w))
        raise UserError(
            f'image size {h}x{w}: each side must be a multiple of {CANVAS_MULTIPLE}, the '
            f"backbone's deepest stride (C5); e.g. {up[0]},{up[1]}"
        )
    return h, w


def padded_size(image_hw) -> tuple[int, int]:
    """(H, W) with each side rounded up to a multiple of CANVAS_MULTIPLE (32): the smallest
    canvas that check_image_size accepts. 400x400 -> 416x416, 800x1333 -> 800x1344."""
    h, w = _check_image_hw(image_hw)
    m = CANVAS_MULTIPLE
    return -(-h // m) * m, -(-w // m) * m


def _check_image_hw(image_hw) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_hw)
    except (TypeError, ValueError):
        raise UserError(f'image_hw must be (height, width) integers, got {image_hw!r}') from None
    if h <= 0 or w <= 0 or (h, w) != tuple(image_hw):
        raise UserError(f'image_hw must be positive integers (height, width), got {image_hw!r}')
    return h, w
