"""`shapes`: a deterministic synthetic detection dataset, generated locally (no download).

Each image holds 1..max_objects coloured circles, squares and triangles of widely varying size
on a textured background (a colour gradient, stripes and noise). Objects may overlap (later ones
are drawn on top, partly occluding earlier ones) but never hide more than about a third of
another. Example i of split s is a pure function of (seed, s, i), so the data are the same on
every machine, in any order, and byte-identical for the same seed.

  generate_example(index, split='train', seed=0, image_size=128) -> {
      'image': uint8 [S, S, 3], 'boxes': float32 [n, 4] xyxy pixels (tight around each shape),
      'labels': int32 [n] in {0: circle, 1: square, 2: triangle}, 'image_id': int,
  }
  ShapesSource(image_size, max_objects, seed, sizes): the dataset as a data.source.Source.
  background(rng, size) -> float32 [S, S, 3]: the textured background alone.
"""

import dataclasses
import functools

import numpy as np

from retinanet_jax.data import label_maps
from retinanet_jax.data.source import Source
from retinanet_jax.errors import UserError

SPLITS = {'train': 0, 'validation': 1, 'test': 2}
NUM_CLASSES = 3


@functools.cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) float32 pixel-centre coordinates of a size x size image (read-only)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 [size, size, 3]: a colour gradient, stripes and noise."""
    yy, xx = _grid(size)
    yy, xx = (yy - 0.5) / size, (xx - 0.5) / size
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, np.pi)
    t = (np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy)[..., None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = c0 * (1 - t) + c1 * t
    period = rng.uniform(4, 16)
    phase = (xx * np.float32(np.cos(angle + 1)) + yy * np.float32(np.sin(angle + 1))) * np.float32(
        size / period * 2 * np.pi
    )
    image += np.float32(rng.uniform(5, 25)) * np.sin(phase)[..., None]
    image += np.float32(rng.uniform(2, 12)) * rng.standard_normal(image.shape, np.float32)
    return image


def _mask(kind: int, cx: float, cy: float, r: float, size: int, angle: float) -> np.ndarray:
    yy, xx = _grid(size)  # pixel centres
    if kind == 0:  # circle
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if kind == 1:  # axis-aligned square of half-side r
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    # triangle: the three vertices on the circle of radius r, rotated by `angle`
    vertices = _triangle(cx, cy, r, angle)
    inside = np.ones_like(xx, bool)
    for i in range(3):
        (x0, y0), (x1, y1) = vertices[i], vertices[(i + 1) % 3]
        inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
    return inside


def _triangle(cx, cy, r, angle):
    a = angle + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def _box_of(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def generate_example(
    index: int,
    split: str = 'train',
    seed: int = 0,
    image_size: int = 128,
    max_objects: int = 4,
    return_masks: bool = False,
) -> dict:
    """Example `index` of `split`; see the module docstring. Boxes are the exact pixel extent
    of each drawn shape (before occlusion by later shapes)."""
    if split not in SPLITS:
        raise UserError(f'shapes: unknown split {split!r}; known: {sorted(SPLITS)}')
    if image_size < 32:
        raise UserError(f'shapes: image_size must be >= 32, got {image_size}')
    rng = np.random.default_rng([seed, SPLITS[split], index])
    size = image_size
    image = background(rng, size)
    boxes, labels, masks, visible = [], [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            kind = int(rng.integers(0, NUM_CLASSES))
            r = rng.uniform(0.06, 0.3) * size
            cx, cy = rng.uniform(r, size - r, 2)
            mask = _mask(kind, cx, cy, r, size, rng.uniform(0, 2 * np.pi))
            if mask.sum() < 16:
                continue
            # Accept only if every earlier object keeps at least 2/3 of its pixels visible.
            if all(
                (v & ~mask).sum() >= (2 / 3) * m.sum() for v, m in zip(visible, masks, strict=True)
            ):
                break
        else:
            continue
        visible = [v & ~mask for v in visible] + [mask]
        masks.append(mask)
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        ys, xs = np.nonzero(mask)  # a little texture on the object's own pixels
        shade = 1 + np.float32(0.15) * rng.standard_normal((len(ys), 1), np.float32)
        image[ys, xs] = colour * shade
        boxes.append(_box_of(mask))
        labels.append(kind)
    example = {
        'image': np.clip(np.rint(image), 0, 255).astype(np.uint8),
        'boxes': np.asarray(boxes, np.float32).reshape(-1, 4),
        'labels': np.asarray(labels, np.int32),
        'image_id': SPLITS[split] * 10_000_000 + index,
    }
    if return_masks:
        example['masks'] = np.asarray(masks, bool).reshape(-1, size, size)
    return example


@dataclasses.dataclass
class ShapesSource(Source):
    image_size: int = 128
    max_objects: int = 4
    seed: int = 0
    sizes: dict = dataclasses.field(
        default_factory=lambda: {'train': 2000, 'validation': 200, 'test': 200}
    )
    label_map: label_maps.LabelMap = label_maps.SHAPES
    name: str = 'shapes'

    def num_examples(self, split):
        if split not in self.sizes:
            raise UserError(f'shapes: unknown split {split!r}; known: {sorted(self.sizes)}')
        return self.sizes[split]

    def example(self, split, index):
        e = generate_example(index, split, self.seed, self.image_size, self.max_objects)
        return {
            **e,
            'image_id': np.int64(e['image_id']),
            'is_crowd': np.zeros(len(e['labels']), bool),
        }
