"""Input pipelines: raw source examples -> batches with static shapes, in an order that is a
pure function of record indices (grain over the sources' random access).

A batch (numpy, per process) holds, for local batch size b, static image size (H, W) and
M = max_boxes:
  'image'       uint8 [b, H, W, 3]     RGB, padded with the mean colour; normalise on the
                                       device with normalization.normalize_images
  'gt_boxes'    float32 [b, M, 4]      xyxy pixels of the resized image; padding rows 0
  'gt_labels'   int32 [b, M]           contiguous labels; -1 marks padding rows
  'image_id'    int64 [b]              dataset image id (-1 for padding examples)
  'orig_size'   int32 [b, 2]           (h, w) of the original image
  'scale'       float32 [b, 2]         (sy, sx): resized = original * scale
  'content_size'  int32 [b, 2]           (h, w) of the resized image inside the padding
  'valid'       bool [b]               False for the masked examples that pad the last
                                       evaluation batch
  'num_boxes_truncated' int32 [b]      boxes beyond M (never silently: log their sum)

Training order (`train_dataset`): epoch e is a fresh permutation of the whole split, a pure
function of (seed, e); each process takes every process_count-th record of it (the last
`n mod process_count` records of each epoch's permutation are left out so that every process
sees as many), and batch k of a process is records [k b, (k + 1) b) of its stream. So the
position of step k is known without reading anything: `train_dataset(...)[k]` is step k's
batch, and an iterator resumed at step k (`train_iterator(ds, k)`) reads and decodes only
what steps >= k need. The augmentation of a record (flip, scale jitter + crop) is a pure
function of (seed, record, epoch), whatever the process count or thread timing; so are the
windows of training by crops (InputConfig.crop_size), the vertical flip, the rotations and the
colour jitter. grain
(MapDataset: shuffle, slice, repeat, batch; threads for prefetching) does the indexing;
`order_of` describes the order, so that a checkpoint can refuse a resume whose order changed.

`eval_dataset` covers every example of the split once, in record order, each process a
contiguous share, and pads the last batch with masked examples; every process yields the
same number of batches. Transforms (transforms.py) are numpy, PIL and OpenCV functions on
uint8 images, run per example (no TensorFlow: its per-call dispatch held the GIL ~1.3 ms per
example).
"""

import dataclasses
import os

import cv2
import grain
import numpy as np
from absl import flags

from retinanet_jax.data import transforms
from retinanet_jax.data.bad_records import BadRecords, SkippingRecords
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.data.source import Source
from retinanet_jax.errors import UserError

RAW_KEYS = ('image', 'image_id', 'boxes', 'labels', 'is_crowd')


def preprocess(example: dict, config: InputConfig, *, train: bool, key: int = 0) -> dict:
    """One raw example (numpy, a source's) -> one padded example (see the module docstring).
    A training example's augmentation is a pure function of (config.seed, key)."""
    example = transforms.init_sizes({k: example[k] for k in RAW_KEYS})
    if train:
        jitter_rng, crop_rng, flip_rng, window_rng, turn_rng, color_rng = example_rngs(
            config.seed, key
        )
    if train and config.crop_size is not None:
        example = transforms.random_rescale(example, *config.crop_scale, window_rng)
        example = transforms.random_window(
            example, config.crop_size, config.crop_min_visible, config.crop_max_empty, window_rng
        )
    elif train and config.scale_jitter is not None:
        low, high = config.scale_jitter
        example = transforms.random_scale_jitter(
            example, config.short_side, config.max_side, low, high, jitter_rng
        )
        example = transforms.random_crop(example, config.image_size, crop_rng)
    elif config.resize == 'square':
        example = transforms.resize_square(example, config.image_size[0])
    else:
        example = transforms.resize_keep_aspect(example, config.short_side, config.max_side)
    if train and config.flip:
        example = transforms.random_horizontal_flip(example, flip_rng)
    if train and config.vflip:
        example = transforms.random_vertical_flip(example, turn_rng)
    if train and config.rot90:
        example = transforms.random_rot90(example, turn_rng)
    if train and config.color_jitter is not None:
        example = transforms.random_color_jitter(example, config.color_jitter, color_rng)
    example = transforms.clip_and_filter_boxes(example, config.min_box_size)
    canvas = config.train_size if train else config.image_size
    return transforms.pad(example, canvas, config.max_boxes)


def example_rngs(seed: int, key: int) -> tuple:
    """The generators of a training example's augmentations, from (seed, key): scale jitter,
    its crop, the horizontal flip, the window (training by crops), the vertical flip and
    rotation, the colour jitter. SeedSequence.spawn(n)'s child i does not depend on n:
    streams can be added."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence([seed, key]).spawn(6))


def window_key(record: int, epoch: int, records: int) -> int:
    """The key of a record's training example in an epoch (train_dataset's map_with_index
    before the shuffle): its augmentation, window included, is a pure function of it."""
    return record + epoch * records


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """`preprocess` with its settings bound, for grain's map (picklable, for its workers)."""

    config: InputConfig
    train: bool

    def __call__(self, example: dict, key: int = 0) -> dict:
        return preprocess(example, self.config, train=self.train, key=key)


def preprocess_image(image, config: InputConfig) -> dict:
    """One uint8 [H, W, 3] RGB image -> the numpy fields a predict step needs ('image',
    'content_size', 'scale'), preprocessed as evaluation examples are."""
    raw = {
        'image': np.asarray(image, np.uint8),
        'image_id': np.int64(0),
        'boxes': np.zeros([0, 4], np.float32),
        'labels': np.zeros([0], np.int32),
        'is_crowd': np.zeros([0], bool),
    }
    example = preprocess(raw, config, train=False)
    return {k: example[k] for k in ('image', 'content_size', 'scale')}


def _shuffle_seed(seed: int) -> int:
    # grain reshuffles epoch e with seed + e: hashing keeps seed 1's epoch 0 from being
    # seed 0's epoch 1.
    return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1)[0])


def train_dataset(
    source: Source,
    config: InputConfig,
    batch_size: int,
    *,
    split: str = 'train',
    process_index: int = 0,
    process_count: int = 1,
    bad_records: BadRecords | None = None,
) -> grain.MapDataset:
    """This process's infinite dataset of batches of `batch_size`: element k is step k's batch
    (see the module docstring). With `bad_records`, a record that cannot be read is replaced
    (data/bad_records.py) and recorded there instead of stopping the run."""
    records = source.records(split)
    if bad_records is not None:
        records = SkippingRecords(records, bad_records)
    n = len(records)
    per_epoch = n - n % process_count
    if per_epoch == 0:
        raise UserError(
            f'{source.name} {split} has {n} examples: too few for {process_count} process(es)'
        )
    prep = Preprocessor(config, train=True)
    # map_with_index before the shuffle: the index is record + epoch * n, so a record's
    # augmentation depends on (seed, record, epoch) alone.
    ds = grain.MapDataset.source(records).map_with_index(lambda key, ex: prep(ex, key))
    ds = ds.shuffle(seed=_shuffle_seed(config.seed))
    ds = ds[:per_epoch][process_index::process_count].repeat()
    return ds.batch(batch_size, drop_remainder=True)


def train_iterator(
    dataset: grain.MapDataset, start_step: int = 0, threads: int = 0, workers: int = 0
):
    """A prefetching iterator over `dataset` from batch `start_step` on (batch k is step k's,
    whatever reads it). Nothing before start_step is read.

    workers = 0: grain threads in this process, each building whole batches; 4 per core (at
    most 16, which bounds the prefetched batches held in memory): an example's work is mostly
    PIL decoding and OpenCV / PIL resizing, which release the GIL, but its Python glue does
    not, and more threads than cores hide it (BENCHMARKS.md, "Training input pipeline").
    `threads` > 0 sets their number (config.data.read_threads).

    workers > 0 (config.data.read_workers): grain's worker processes (spawned; batch k from
    worker k mod workers, so the order is the same), each reading on its own main thread
    with single-threaded OpenCV, so one worker uses one core, free of this process's GIL.
    Close the iterator (`close()`) when done: its workers stop."""
    if workers:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (a library caller)
            flags.FLAGS.mark_as_parsed()
        options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
        iterable = dataset[start_step:].to_iter_dataset(
            grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        )
        return iter(iterable.mp_prefetch(options, worker_init_fn=single_threaded_worker))
    threads = threads or min(16, 4 * (os.cpu_count() or 1))
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads)
    iterator = iter(dataset.to_iter_dataset(options))
    if start_step:
        iterator.set_state({'next_index': int(start_step)})
    return iterator


def single_threaded_worker(worker_index: int, worker_count: int) -> None:
    """grain's worker start-up: OpenCV on one thread (the workers share the cores; on its own
    thread pool one worker took both cores of the 2-core machine, and 2 workers gave 1.6x 1)."""
    del worker_index, worker_count
    cv2.setNumThreads(1)


def eval_dataset(
    source: Source,
    config: InputConfig,
    batch_size: int,
    *,
    split: str = 'validation',
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[grain.MapDataset, int]:
    """(dataset, num_batches): every example of this process's share once, in order, then
    masked padding examples up to num_batches * batch_size. num_batches is the same on every
    process (the largest share decides). Iterate it, or `eval_batches(...)` to prefetch."""
    records = source.records(split)
    n = len(records)
    start, stop = even_range(n, process_index, process_count)
    largest = max(b - a for a, b in (even_range(n, p, process_count) for p in range(process_count)))
    num_batches = -(-largest // batch_size)
    prep = Preprocessor(config, train=False)
    filler = padding_example(config)

    def example(i):
        return prep(records[start + i]) if start + i < stop else filler

    ds = grain.MapDataset.range(num_batches * batch_size).map(example)
    return ds.batch(batch_size, drop_remainder=True), num_batches


def eval_batches(dataset: grain.MapDataset):
    """The batches of an `eval_dataset`, prefetched by grain threads."""
    return train_iterator(dataset)


def even_range(n: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, stop) of process `process_index`'s share of n items (sizes differ by <= 1)."""
    return n * process_index // process_count, n * (process_index + 1) // process_count


def padding_example(config: InputConfig) -> dict:
    """A masked example ('valid' False, no boxes, image id -1) with the pipeline's shapes."""
    h, w = config.image_size
    m = config.max_boxes
    return {
        'image': np.zeros([h, w, 3], np.uint8),
        'gt_boxes': np.zeros([m, 4], np.float32),
        'gt_labels': np.full([m], -1, np.int32),
        'image_id': np.int64(-1),
        'orig_size': np.array([h, w], np.int32),
        'scale': np.ones([2], np.float32),
        'content_size': np.array([h, w], np.int32),
        'valid': np.bool_(False),
        'num_boxes_truncated': np.int32(0),
    }
