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
    flip: bool = True
    scale_jitter: tuple[float, float] | None = None  # e.g. (0.8, 1.2); crops to image_size
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


def keep_aspect_size(hw, short_side: float, max_side: float) -> np.ndarray:
    """(h, w) scaled so the short side is `short_side`, unless the long side would exceed
    `max_side`; rounded, at least 1."""
    hw = np.asarray(hw, np.float32)
    factor = np.minimum(np.float32(short_side) / hw.min(), np.float32(max_side) / hw.max())
    return np.maximum(np.round(hw * factor), 1.0).astype(np.int32)
