"""tf.data transforms: small functions from example dict to example dict.

They run both eagerly and inside `Dataset.map`. Boxes are xyxy in absolute pixels of the image
the example currently holds. Randomness is stateless: each random transform takes a `seed`
tensor of shape [2] (the pipeline derives one per example from the config seed and the
example's position), so a run is reproducible whatever the threading.

Images stay uint8 throughout (normalisation happens on the device, see normalization.py).
Fields added along the way (see `pad`): 'orig_size' [2] int32 (h, w of the source image),
'scale' [2] float32 (sy, sx: resized = original * scale), 'content_size' [2] int32 (h, w of the
resized image before padding), 'valid' bool, 'num_boxes_truncated' int32.
"""

import tensorflow as tf

from retinanet_jax.normalization import PAD_VALUE


def init_sizes(example: dict) -> dict:
    """Records the original size; scale 1."""
    size = tf.shape(example['image'])[:2]
    return {**example, 'orig_size': size, 'content_size': size, 'scale': tf.ones([2], tf.float32)}


def _resize_to(example: dict, new_hw) -> dict:
    new_hw = tf.cast(new_hw, tf.int32)
    old_hw = tf.cast(tf.shape(example['image'])[:2], tf.float32)
    factor = tf.cast(new_hw, tf.float32) / old_hw  # (fy, fx), exact after rounding

    def resized():
        image = tf.cond(  # antialiasing only matters when shrinking, and costs ~2x enlarging
            tf.reduce_min(factor) < 1.0,
            lambda: tf.image.resize(example['image'], new_hw, method='bilinear', antialias=True),
            lambda: tf.image.resize(example['image'], new_hw, method='bilinear'),
        )
        return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)

    same = tf.reduce_all(tf.equal(new_hw, tf.shape(example['image'])[:2]))
    image = tf.cond(same, lambda: example['image'], resized)  # (a resize to the same size is one)
    boxes = example['boxes'] * tf.tile(factor[::-1], [2])[None]
    return {
        **example,
        'image': image,
        'boxes': boxes,
        'content_size': new_hw,
        'scale': example['scale'] * factor,
    }


def resize_keep_aspect(example: dict, short_side: float, max_side: float) -> dict:
    """Scales so the short side is `short_side`, unless the long side would exceed `max_side`."""
    hw = tf.cast(tf.shape(example['image'])[:2], tf.float32)
    factor = tf.minimum(short_side / tf.reduce_min(hw), max_side / tf.reduce_max(hw))
    return _resize_to(example, tf.maximum(tf.round(hw * factor), 1.0))


def resize_square(example: dict, size: int) -> dict:
    """Resizes to size x size, not keeping the aspect ratio (scale differs per axis)."""
    return _resize_to(example, [size, size])


def random_scale_jitter(
    example: dict, short_side: float, max_side: float, low: float, high: float, seed
) -> dict:
    """`resize_keep_aspect` with both targets multiplied by a factor uniform in [low, high]."""
    factor = tf.random.stateless_uniform([], seed, low, high)
    return resize_keep_aspect(example, short_side * factor, max_side * factor)


def random_horizontal_flip(example: dict, seed) -> dict:
    """Flips image and boxes left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    width = tf.cast(tf.shape(example['image'])[1], tf.float32)
    x1, y1, x2, y2 = tf.unstack(example['boxes'], axis=1)
    flipped = tf.stack([width - x2, y1, width - x1, y2], axis=1)
    return {
        **example,
        'image': tf.cond(flip, lambda: example['image'][:, ::-1], lambda: example['image']),
        'boxes': tf.where(flip, flipped, example['boxes']),
    }


def random_crop(example: dict, max_hw: tuple[int, int], seed) -> dict:
    """Crops a random window of at most max_hw (only where the image is larger); boxes follow."""
    hw = tf.shape(example['image'])[:2]
    crop_hw = tf.minimum(hw, max_hw)
    offset = tf.cast(
        tf.random.stateless_uniform([2], seed) * tf.cast(hw - crop_hw + 1, tf.float32), tf.int32
    )
    offset = tf.minimum(offset, hw - crop_hw)
    image = tf.slice(example['image'], [offset[0], offset[1], 0], [crop_hw[0], crop_hw[1], -1])
    shift = tf.cast(tf.tile(offset[::-1], [2]), tf.float32)[None]
    return {**example, 'image': image, 'boxes': example['boxes'] - shift, 'content_size': crop_hw}


def clip_and_filter_boxes(example: dict, min_size: float = 1.0) -> dict:
    """Clips boxes to the image; drops crowd boxes and boxes under `min_size` pixels wide or
    tall. Crowd regions stay in the raw source for evaluation; they are never targets."""
    hw = tf.cast(tf.shape(example['image'])[:2], tf.float32)
    limit = tf.stack([hw[1], hw[0], hw[1], hw[0]])[None]
    boxes = tf.clip_by_value(example['boxes'], 0.0, limit)
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (wh[:, 0] >= min_size) & (wh[:, 1] >= min_size) & ~example['is_crowd']
    return {
        **example,
        'boxes': tf.boolean_mask(boxes, keep),
        'labels': tf.boolean_mask(example['labels'], keep),
        'is_crowd': tf.boolean_mask(example['is_crowd'], keep),
    }


def pad(example: dict, image_hw: tuple[int, int], max_boxes: int) -> dict:
    """Static shapes: uint8 image padded (bottom / right) with the mean colour PAD_VALUE to
    image_hw; ground truth to max_boxes
    rows, padding rows with box 0 and label -1. Boxes beyond max_boxes are cut and counted in
    'num_boxes_truncated'. Output keys: image, gt_boxes, gt_labels, image_id, orig_size, scale,
    content_size, valid, num_boxes_truncated."""
    image = example['image']
    hw = tf.shape(image)[:2]
    tf.debugging.assert_less_equal(
        hw, tf.constant(image_hw), message='pad: image larger than the static image size'
    )
    fill = tf.constant(PAD_VALUE, tf.uint8)
    right = tf.broadcast_to(fill, [hw[0], image_hw[1] - hw[1], 3])
    image = tf.concat([image, right], axis=1)
    below = tf.broadcast_to(fill, [image_hw[0] - hw[0], image_hw[1], 3])
    image = tf.ensure_shape(tf.concat([image, below], axis=0), [*image_hw, 3])
    n = tf.shape(example['labels'])[0]
    keep = tf.minimum(n, max_boxes)
    boxes = tf.pad(example['boxes'][:keep], [[0, max_boxes - keep], [0, 0]])
    labels = tf.pad(example['labels'][:keep], [[0, max_boxes - keep]], constant_values=-1)
    return {
        'image': image,
        'gt_boxes': tf.ensure_shape(boxes, [max_boxes, 4]),
        'gt_labels': tf.ensure_shape(labels, [max_boxes]),
        'image_id': tf.cast(example['image_id'], tf.int64),
        'orig_size': tf.cast(example['orig_size'], tf.int32),
        'scale': tf.cast(example['scale'], tf.float32),
        'content_size': tf.cast(example['content_size'], tf.int32),
        'valid': tf.constant(True),
        'num_boxes_truncated': n - keep,
    }
