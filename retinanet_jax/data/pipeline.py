"""Input pipelines: raw source examples -> batches with static shapes.

A batch (numpy, per process) holds, for local batch size b, static image size (H, W) and
M = max_boxes:
  'image'       uint8 [b, H, W, 3]     RGB, padded with the mean colour; normalise on the
                                       device with normalization.normalize_images
  'gt_boxes'    float32 [b, M, 4]      xyxy pixels of the resized image; padding rows 0
  'gt_labels'   int32 [b, M]           contiguous labels; -1 marks padding rows
  'image_id'    int64 [b]              dataset image id (-1 for padding examples)
  'orig_size'   int32 [b, 2]           (h, w) of the original image
  'scale'       float32 [b, 2]         (sy, sx): resized = original * scale
  'image_size'  int32 [b, 2]           (h, w) of the resized image inside the padding
  'valid'       bool [b]               False for the masked examples that pad the last
                                       evaluation batch
  'num_boxes_truncated' int32 [b]      boxes beyond M (never silently: log their sum)

`train_dataset` shuffles, repeats and augments (flip, optional scale jitter + crop) with
stateless randomness derived from `InputConfig.seed`, so the order and the augmentations are
the same for the same seed. `eval_dataset` covers every example of the split exactly once and
pads the last batch with masked examples; every process yields the same number of batches.
"""

import tensorflow as tf

from retinanet_jax.data import transforms
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.data.sources import Source


def preprocess(example: dict, config: InputConfig, *, train: bool, seed=None) -> dict:
    """One raw example -> one padded example (see the module docstring for the fields)."""
    example = transforms.init_sizes(example)
    seeds = tf.random.experimental.stateless_split(seed, 3) if train else None
    if train and config.scale_jitter is not None:
        low, high = config.scale_jitter
        example = transforms.random_scale_jitter(
            example, config.short_side, config.max_side, low, high, seeds[0]
        )
        example = transforms.random_crop(example, config.image_size, seeds[1])
    elif config.resize == 'square':
        example = transforms.resize_square(example, config.image_size[0])
    else:
        example = transforms.resize_keep_aspect(example, config.short_side, config.max_side)
    if train and config.flip:
        example = transforms.random_horizontal_flip(example, seeds[2])
    example = transforms.clip_and_filter_boxes(example, config.min_box_size)
    return transforms.pad(example, config.image_size, config.max_boxes)


def preprocess_image(image, config: InputConfig) -> dict:
    """One uint8 [H, W, 3] RGB image -> the numpy fields a predict step needs ('image',
    'image_size', 'scale'), preprocessed as evaluation examples are (eagerly)."""
    raw = {
        'image': tf.constant(image, tf.uint8),
        'image_id': tf.constant(0, tf.int64),
        'boxes': tf.zeros([0, 4]),
        'labels': tf.zeros([0], tf.int32),
        'is_crowd': tf.zeros([0], tf.bool),
    }
    example = preprocess(raw, config, train=False)
    return {k: example[k].numpy() for k in ('image', 'image_size', 'scale')}


def train_dataset(
    source: Source,
    config: InputConfig,
    batch_size: int,
    *,
    split: str = 'train',
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """An infinite, shuffled, augmented dataset of this process's batches of `batch_size`."""
    seed = config.seed * 1_000_003 + process_index
    ds = source.raw(split, shuffle_files=True, seed=seed, process_index=process_index,
                    process_count=process_count)  # fmt: skip
    ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().map(
        lambda i, ex: preprocess(
            ex, config, train=True, seed=tf.stack([tf.cast(seed, tf.int64), i])
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    source: Source,
    config: InputConfig,
    batch_size: int,
    *,
    split: str = 'validation',
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[tf.data.Dataset, int]:
    """(dataset, num_batches): every example of this process's share once, in order, then
    masked padding examples up to num_batches * batch_size. num_batches is the same on every
    process (the largest share decides)."""
    largest = max(source.num_examples(split, p, process_count) for p in range(process_count))
    num_batches = -(-largest // batch_size)
    mine = source.num_examples(split, process_index, process_count)
    ds = source.raw(split, process_index=process_index, process_count=process_count)
    ds = ds.map(lambda ex: preprocess(ex, config, train=False),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)  # fmt: skip
    filler = padding_example(config)
    ds = ds.concatenate(
        tf.data.Dataset.from_tensors(filler).repeat(num_batches * batch_size - mine)
    )
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE), num_batches


def padding_example(config: InputConfig) -> dict:
    """A masked example ('valid' False, no boxes, image id -1) with the pipeline's shapes."""
    h, w = config.image_size
    m = config.max_boxes
    return {
        'image': tf.zeros([h, w, 3], tf.uint8),
        'gt_boxes': tf.zeros([m, 4], tf.float32),
        'gt_labels': tf.fill([m], -1),
        'image_id': tf.constant(-1, tf.int64),
        'orig_size': tf.constant([h, w], tf.int32),
        'scale': tf.ones([2], tf.float32),
        'image_size': tf.constant([h, w], tf.int32),
        'valid': tf.constant(False),
        'num_boxes_truncated': tf.constant(0, tf.int32),
    }
