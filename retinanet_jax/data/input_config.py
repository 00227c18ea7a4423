"""InputConfig: the preprocessing settings of the input pipelines (no TensorFlow import, so
that settings and inference code can hold one without loading the input stack)."""

import dataclasses
from typing import Literal

import numpy as np

from retinanet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Preprocessing settings (the dataset itself is a `Source`)."""

    image_size: tuple[int, int] = (128, 128)  # static, padded network input (H, W)
    resize: Literal['keep_aspect', 'square'] = 'keep_aspect'
    short_side: int = 128  # keep_aspect: target short side ...
    max_side: int = 128  # ... unless the long side would exceed this
    flip: bool = True  # random horizontal flip in training
    # Augmentations for imagery with no "up" and changing light (aerial, microscopy), off by
    # default: a random vertical flip, a random rotation by k * 90 degrees (square canvases),
    # and torchvision's ColorJitter(brightness, contrast, saturation, hue), e.g. (0.2, 0.2,
    # 0.2, 0.02).
    vflip: bool = False
    rot90: bool = False
    color_jitter: tuple[float, float, float, float] | None = None
    scale_jitter: tuple[float, float] | None = None  # e.g. (0.8, 1.2); crops to image_size
    # Training by windows at the image's own scale (large images, small objects): each
    # training example is a random crop_size window (H, W) of the image rescaled by a factor
    # uniform in crop_scale, its canvas; evaluation keeps image_size (transforms.random_window).
    crop_size: tuple[int, int] | None = None
    crop_scale: tuple[float, float] = (1.0, 1.0)
    crop_min_visible: float = 0.5  # a box cut by the window is kept with this share of its area
    crop_max_empty: float = 0.1  # at most this share of windows is placed regardless of objects
    max_boxes: int = 100
    min_box_size: float = 1.0  # boxes narrower or lower than this (pixels) are dropped
    seed: int = 0

    def __post_init__(self):
        if self.resize not in ('keep_aspect', 'square'):
            raise UserError(
                f"InputConfig.resize must be 'keep_aspect' or 'square': {self.resize!r}"
            )
        if self.resize == 'keep_aspect' and self.max_side > max(self.image_size):
            raise UserError(
                f'InputConfig.max_side {self.max_side} exceeds the static image_size '
                f'{self.image_size}: images would not fit'
            )
        if self.max_boxes < 1:
            raise UserError(f'InputConfig.max_boxes must be >= 1, got {self.max_boxes}')
        if self.crop_size is not None:
            self._check_crop()
        if self.rot90 and self.train_size[0] != self.train_size[1]:
            raise UserError(
                f'InputConfig.rot90 needs a square training canvas, got {self.train_size} '
                '(crop_size, else image_size)'
            )
        if self.color_jitter is not None:
            jitter = tuple(self.color_jitter)
            if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
                raise UserError(
                    'InputConfig.color_jitter must be (brightness, contrast, saturation, hue), '
                    f'each >= 0 and hue <= 0.5, got {jitter}'
                )

    def _check_crop(self):
        if self.scale_jitter is not None:
            raise UserError(
                'InputConfig: give crop_size (windows at the image scale) or scale_jitter '
                '(resized images), not both'
            )
        size, scale = tuple(self.crop_size), tuple(self.crop_scale)
        if len(size) != 2 or min(size) < 1:
            raise UserError(f'InputConfig.crop_size must be (height, width) >= 1, got {size}')
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise UserError(f'InputConfig.crop_scale must be (low, high), 0 < low <= high: {scale}')
        if not 0 < self.crop_min_visible <= 1 or not 0 <= self.crop_max_empty <= 1:
            raise UserError(
                'InputConfig.crop_min_visible must be in (0, 1] and crop_max_empty in [0, 1]: '
                f'{self.crop_min_visible}, {self.crop_max_empty}'
            )

    @property
    def train_size(self) -> tuple[int, int]:
        """The canvas (H, W) of training examples: crop_size, else image_size."""
        return tuple(self.crop_size if self.crop_size is not None else self.image_size)


def keep_aspect_size(hw, short_side: float, max_side: float) -> np.ndarray:
    """(h, w) scaled so the short side is `short_side`, unless the long side would exceed
    `max_side`; rounded, at least 1."""
    hw = np.asarray(hw, np.float32)
    factor = np.minimum(np.float32(short_side) / hw.min(), np.float32(max_side) / hw.max())
    return np.maximum(np.round(hw * factor), 1.0).astype(np.int32)
