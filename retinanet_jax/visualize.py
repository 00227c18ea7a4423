"""Drawing boxes with class names (and scores) on images, for people to look at.

draw_boxes(image uint8 [H, W, 3], boxes [n, 4] xyxy pixels, labels [n], names, scores=None)
denormalize(image float32 [H, W, 3] normalised with ImageNet mean / std) -> uint8
grid(images) -> one PIL image
"""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    scores: np.ndarray | None = None,
) -> Image.Image:
    """Draws each box in its class colour with 'name' or 'name 0.87' above it."""
    canvas = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (box, label) in enumerate(zip(np.asarray(boxes), np.asarray(labels), strict=True)):
        colour = _PALETTE[int(label) % len(_PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        name = names[int(label)] if 0 <= int(label) < len(names) else str(int(label))
        text = name if scores is None else f'{name} {float(scores[i]):.2f}'
        tx, ty = x1 + 2, max(y1 - 11, 0)
        left, top, right, bottom = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=colour)
        draw.text((tx, ty), text, fill=(0, 0, 0), font=font)
    return canvas


def grid(images: Sequence[Image.Image], columns: int = 4) -> Image.Image:
    """Tiles equally sized images row-major into one image."""
    if not images:
        raise ValueError('grid: no images to tile')
    w, h = images[0].size
    rows = -(-len(images) // columns)
    out = Image.new('RGB', (w * min(columns, len(images)), h * rows), (255, 255, 255))
    for i, im in enumerate(images):
        out.paste(im, ((i % columns) * w, (i // columns) * h))
    return out
