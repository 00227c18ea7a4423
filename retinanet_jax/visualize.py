"""Drawing boxes with class names (and scores) on images, for people to look at.

draw_boxes(image uint8 [H, W, 3], boxes [n, 4] xyxy pixels, labels [n], names, scores=None,
           min_score=0.0): labels kept inside the image and apart (label_positions)
denormalize(image float32 [H, W, 3] normalised with ImageNet mean / std) -> uint8
grid(images) -> one PIL image
draw_batch(batch, names) -> the valid examples of an input batch with their ground truth drawn
figure_array(matplotlib figure) -> uint8 [H, W, 3]
"""

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from retinanet_jax.errors import UserError

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
    min_score: float = 0.0,
) -> Image.Image:
    """Draws each box (score >= min_score) in its class colour with 'name' or 'name 0.87' on a
    label that stays inside the image and does not cover another label where it can be helped:
    above the box, else inside its top, below it, inside its bottom (best scores placed first)."""
    canvas = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    boxes, labels = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels).reshape(-1)
    order = np.arange(len(labels))
    if scores is not None:
        scores = np.asarray(scores).reshape(-1)
        order = [i for i in np.argsort(-scores, kind='stable') if scores[i] >= min_score]
    texts, colours = {}, {}
    for i in order:
        label = int(labels[i])
        name = names[label] if 0 <= label < len(names) else str(label)
        texts[i] = name if scores is None else f'{name} {float(scores[i]):.2f}'
        colours[i] = _PALETTE[label % len(_PALETTE)]
        draw.rectangle(boxes[i].tolist(), outline=colours[i], width=2)
    sizes = {i: _text_size(draw, texts[i], font) for i in order}
    for i, (x, y) in label_positions(
        [boxes[i] for i in order], [sizes[i] for i in order], canvas.size
    ).items():
        j = order[i]
        w, h = sizes[j]
        draw.rectangle([x, y, x + w, y + h], fill=colours[j])
        draw.text((x + 1, y), texts[j], fill=(0, 0, 0), font=font)
    return canvas


def label_positions(boxes, sizes, image_size) -> dict[int, tuple[float, float]]:
    """Top-left corners of labels of `sizes` (w, h) for `boxes` (xyxy), in order: each inside
    the image (W, H), at the first of (above the box, inside its top, below it, inside its
    bottom) that overlaps no label placed before, else where it overlaps them least."""
    width, height = image_size
    placed, out = [], {}
    for i, (box, (w, h)) in enumerate(zip(boxes, sizes, strict=True)):
        x1, y1, _, y2 = (float(v) for v in box)
        x = min(max(x1, 0.0), max(width - w - 1, 0.0))
        candidates = [y1 - h - 1, y1 + 1, y2 + 1, y2 - h - 1]
        candidates = [min(max(y, 0.0), max(height - h - 1, 0.0)) for y in candidates]

        def overlap(y, x=x, w=w, h=h):
            return sum(
                max(0.0, min(x + w, px + pw) - max(x, px))
                * max(0.0, min(y + h, py + ph) - max(y, py))
                for px, py, pw, ph in placed
            )

        y = next((c for c in candidates if overlap(c) == 0), None)
        if y is None:
            y = min(candidates, key=overlap)
        placed.append((x, y, w, h))
        out[i] = (x, y)
    return out


def _text_size(draw, text, font) -> tuple[float, float]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left + 2, bottom - top + 2


def grid(images: Sequence[Image.Image], columns: int = 4) -> Image.Image:
    """Tiles equally sized images row-major into one image."""
    if not images:
        raise UserError('grid: no images to tile')
    w, h = images[0].size
    rows = -(-len(images) // columns)
    out = Image.new('RGB', (w * min(columns, len(images)), h * rows), (255, 255, 255))
    for i, im in enumerate(images):
        out.paste(im, ((i % columns) * w, (i // columns) * h))
    return out


def figure_array(fig) -> np.ndarray:
    """A matplotlib Figure as uint8 RGB [H, W, 3]."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    return np.asarray(Image.open(buffer).convert('RGB'))


def draw_batch(batch: dict, names) -> list[Image.Image]:
    """The valid examples of an input batch (data.pipeline: uint8 'image' [B, H, W, 3] on the
    canvas, 'gt_boxes' [B, M, 4] xyxy canvas pixels, 'gt_labels' [B, M], -1 padding, 'valid'
    [B]) with their ground-truth boxes and class names drawn: what the model is fed."""
    pictures = []
    for i in np.flatnonzero(batch['valid']):
        keep = batch['gt_labels'][i] >= 0
        boxes, labels = batch['gt_boxes'][i][keep], batch['gt_labels'][i][keep]
        pictures.append(draw_boxes(batch['image'][i], boxes, labels, names))
    return pictures
