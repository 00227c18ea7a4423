"""Sliced (tiled) inference: a large image cut into overlapping windows, the windows of one or
many images run in fixed-size batches through the predictor's one jitted step, and their
detections mapped back and merged so that one object gives one detection.

  windows = tile_windows((H, W), tile=512, overlap=0.2)  # int [T, 4] (y0, x0, y1, x1)
  dets = predict_tiled(predictor, images, TileConfig(size=512, overlap=0.2, batch=8))
  for group in image_groups(predictor, items, tiles, image_of): ...  # items to predict together
  call_count(predictor, sizes, tiles); idle_calls(predictor, tiles, n)  # several processes
  # per image: 'boxes' float32 [N, 4] xyxy in the image's pixels, 'scores' [N], 'labels'
  # int32 [N] (indices into predictor.label_map.names), 'valid' bool [N] (all True), best first

A model trained by windows at the images' own scale (input.crop_size) runs every window at
that scale, on a canvas of the window's size (window_predictor); its default tile is its
training window.

Windows (SAHI's layout): a grid of tile x tile windows with a stride of round(tile * (1 -
overlap)), the last row and column moved back to end at the image's edge, so every window lies
inside the image; along a side shorter than the tile, one window of that side's length, padded
(bottom / right, with the mean colour, as the canvas is) to a whole tile, so that every window
of every image runs at one scale. Each window is then preprocessed as an evaluation image:
resized by the predictor's input settings, so a tile of `default_tile` (the input's short side,
or the canvas side for square resizing) runs at scale 1, the model's own. An image no larger
than a tile is one window, the image itself: exactly what the whole-image predictor sees.

Merging (tile_merge.merge_detections): a view that a window's inner edge cuts yields to a
whole view of the object in a neighbouring window; whole views go through class-aware NMS;
the views of an object larger than the overlap, cut in every window, merge across the seams
into one box. Boxes are clipped to the image.
"""

import dataclasses

import numpy as np

from retinanet_jax.data import pipeline
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.errors import UserError
from retinanet_jax.inference.predictor import call_size
from retinanet_jax.inference.tile_merge import merge_detections, tile_windows, window_pixels
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.ops.normalization import PAD_VALUE


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """Sliced inference's settings: the window side in pixels (None: the predictor's
    default_tile), the share of a window its neighbour overlaps, windows per jitted call (of
    each process, predictor.call_size)."""

    size: int | None = None
    overlap: float = 0.2
    batch: int = 8

    def __post_init__(self):
        if self.size is not None and self.size < 1:
            raise UserError(f'tile size must be >= 1 pixel, got {self.size}')
        if not 0 <= self.overlap <= 0.9:
            raise UserError(f'tile overlap must be in [0, 0.9], got {self.overlap}')
        if self.batch < 1:
            raise UserError(f'tile batch must be >= 1, got {self.batch}')


def default_tile(config: InputConfig) -> int:
    """The window side that the predictor's preprocessing leaves at scale 1: for a model
    trained by windows (config.crop_size), the training window's short side."""
    if config.crop_size is not None:
        return min(config.crop_size)
    if config.resize == 'square':
        return min(config.image_size)
    return min(config.short_side, config.max_side)


def tile_side(predictor, tiles: TileConfig) -> int:
    """The window side of `tiles` for `predictor`: tiles.size, else its default_tile."""
    return tiles.size or default_tile(predictor.input)


def window_predictor(predictor, tile: int):
    """The predictor that runs `tile`-pixel windows. A model trained by windows at the images'
    own scale (input.crop_size; crop_scale's geometric mean) runs every window at that scale,
    whatever the tile: its own canvas, `tile` times the scale rounded up to a multiple of 32.
    Any other runs windows through its own preprocessing and canvas (scale 1 at default_tile)."""
    config = predictor.input
    if config.crop_size is None:
        return predictor
    side = max(1, round(tile * float(np.sqrt(np.prod(config.crop_scale)))))
    native = InputConfig(
        image_size=anchor_lib.padded_size((side, side)),
        short_side=side,
        max_side=side,
        flip=False,
        max_boxes=config.max_boxes,
    )
    return dataclasses.replace(predictor, input=native)


def predict_tiled(predictor, images, tiles: TileConfig = TileConfig()) -> list[dict]:
    """Detections of each uint8 [H, W, 3] image of `images` by sliced inference (see the module
    docstring). Windows of all the images share batches of `tiles.batch`; one batch of windows
    is in memory at a time besides the images."""
    images = list(images)
    tile = tile_side(predictor, tiles)
    predictor = window_predictor(predictor, tile)
    plan = [
        (i, window)
        for i, im in enumerate(images)
        for window in tile_windows(im.shape[:2], tile, tiles.overlap)
    ]

    def examples():
        for i, window in plan:
            pixels = window_pixels(images[i], window, tile, PAD_VALUE)
            yield pipeline.preprocess_image(pixels, predictor.input)

    found = [[] for _ in images]
    detections = predictor.predict_examples(examples(), tiles.batch)
    for (i, window), dets in zip(plan, detections, strict=True):
        keep = dets['valid']
        found[i].append((window, dets['boxes'][keep], dets['scores'][keep], dets['labels'][keep]))
    iou = predictor.postprocess.nms_iou_threshold
    return [
        merge_detections(parts, im.shape[:2], iou) for parts, im in zip(found, images, strict=True)
    ]


def call_count(predictor, sizes, tiles: TileConfig = TileConfig()) -> int:
    """The jitted calls that predicting images of these (H, W) `sizes` by tiles makes, grouped
    as image_groups groups them (no pixel is needed)."""
    tile = tile_side(predictor, tiles)
    per_call = call_size(tiles.batch)
    shaped = (np.broadcast_to(np.zeros((), np.uint8), (*hw, 3)) for hw in sizes)  # shapes alone
    return sum(
        -(-sum(len(tile_windows(im.shape[:2], tile, tiles.overlap)) for im in group) // per_call)
        for group in image_groups(predictor, shaped, tiles)
    )


def idle_calls(predictor, tiles: TileConfig, count: int) -> None:
    """`count` calls of the tiles' jitted predict step on blank windows, their results dropped.
    Processes that predict shares of unequal size by tiles must still launch the program as
    often as each other (a process that stops early leaves the others waiting for it, seen on
    CPUs): the ones with fewer windows make up the difference with these."""
    if count <= 0:
        return
    tile = tile_side(predictor, tiles)
    predictor = window_predictor(predictor, tile)
    blank = np.full((tile, tile, 3), PAD_VALUE, np.uint8)
    example = pipeline.preprocess_image(blank, predictor.input)
    for _ in range(count):
        for _ in predictor.predict_examples([example] * call_size(tiles.batch), tiles.batch):
            pass


def image_groups(predictor, items, tiles: TileConfig = TileConfig(), image_of=lambda item: item):
    """Consecutive groups (lists) of the iterable `items` whose images (`image_of(item)`, an
    array [H, W, 3]) to predict_tiled together, so that small images share batches: a group
    closes once its windows fill whole jitted calls (tiles.batch rounded up to the device
    count) or reach four calls. At most a group's images are held at a time."""
    tile = tile_side(predictor, tiles)
    per_call, group, windows = call_size(tiles.batch), [], 0
    for item in items:
        group.append(item)
        windows += len(tile_windows(image_of(item).shape[:2], tile, tiles.overlap))
        if windows % per_call == 0 or windows >= 4 * per_call:
            yield group
            group, windows = [], 0
    if group:
        yield group
