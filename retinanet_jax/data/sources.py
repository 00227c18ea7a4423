"""Dataset sources, each yielding raw examples of one common format (a tf.data.Dataset of dicts):

  'image'     uint8 [H, W, 3]
  'image_id'  int64 []          the dataset's image id (COCO id, VOC file number, ...)
  'boxes'     float32 [n, 4]    xyxy, absolute pixels of the original image
  'labels'    int32 [n]         contiguous training labels 0..K-1 (see label_maps.py)
  'is_crowd'  bool [n]          COCO crowd regions / VOC 'difficult' objects: kept for
                                evaluation, never used as training targets

Sources: `coco/2017` and `voc/2007`, `voc/2012`, `voc/2007+2012` through tfds; `coco_folder`
(an annotation json + an image folder, for custom data); `shapes` (synthetic, no download).
Every source reads only its own process's shard (`process_index` of `process_count`).
TensorFlow is used for input only; import this module only where input is read.
"""

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from retinanet_jax.data import label_maps, shapes

tf.config.set_visible_devices([], 'GPU')  # input only: keep TensorFlow off the accelerators

RAW_SIGNATURE = {
    'image': tf.TensorSpec([None, None, 3], tf.uint8),
    'image_id': tf.TensorSpec([], tf.int64),
    'boxes': tf.TensorSpec([None, 4], tf.float32),
    'labels': tf.TensorSpec([None], tf.int32),
    'is_crowd': tf.TensorSpec([None], tf.bool),
}

KNOWN = ('coco/2017', 'voc/2007', 'voc/2012', 'voc/2007+2012', 'coco_folder', 'shapes')


class Source:
    """A dataset: its label map, its split sizes and its raw examples."""

    label_map: label_maps.LabelMap
    voc_ap50 = None

    def num_examples(self, split: str, process_index: int = 0, process_count: int = 1) -> int:
        raise NotImplementedError

    def raw(
        self,
        split: str,
        *,
        shuffle_files: bool = False,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ) -> tf.data.Dataset:
        raise NotImplementedError


def _even_range(n: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, stop) of process `process_index`'s share of n items (sizes differ by <= 1)."""
    return n * process_index // process_count, n * (process_index + 1) // process_count


# ------------------------------------------------------------------------------------ shapes


@dataclasses.dataclass
class ShapesSource(Source):
    image_size: int = 128
    max_objects: int = 4
    seed: int = 0
    sizes: dict = dataclasses.field(
        default_factory=lambda: {'train': 2000, 'validation': 200, 'test': 200}
    )
    label_map: label_maps.LabelMap = label_maps.SHAPES

    def _split(self, split: str) -> int:
        if split not in self.sizes:
            raise ValueError(f'shapes: unknown split {split!r}; known: {sorted(self.sizes)}')
        return self.sizes[split]

    def num_examples(self, split, process_index=0, process_count=1):
        start, stop = _even_range(self._split(split), process_index, process_count)
        return stop - start

    def raw(self, split, *, shuffle_files=False, seed=0, process_index=0, process_count=1):
        del shuffle_files, seed  # examples are addressed by index; the pipeline shuffles
        start, stop = _even_range(self._split(split), process_index, process_count)

        def make(index):
            e = shapes.generate_example(
                int(index), split, self.seed, self.image_size, self.max_objects
            )
            n = len(e['labels'])
            return e['image'], np.int64(e['image_id']), e['boxes'], e['labels'], np.zeros(n, bool)

        def to_dict(index):
            out = tf.numpy_function(
                make, [index], [tf.uint8, tf.int64, tf.float32, tf.int32, tf.bool], stateful=False
            )
            example = dict(zip(RAW_SIGNATURE, out, strict=True))
            for key, spec in RAW_SIGNATURE.items():
                example[key] = tf.ensure_shape(example[key], spec.shape)
            return example

        return tf.data.Dataset.range(start, stop).map(
            to_dict, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )


# ------------------------------------------------------------------------------ coco_folder


@dataclasses.dataclass
class CocoFolderSource(Source):
    """Custom data in COCO format: one annotation json per split, images under `image_dir`.

    `annotations` maps split -> json path. Everything is validated when the split is first
    read: a missing or unreadable image, an annotation that points to an unknown image or
    category, or a box with negative size raises a ValueError naming the file or record.
    """

    annotations: dict
    image_dir: str
    verify_images: bool = True

    def __post_init__(self):
        self._cache = {}
        first = self._load(next(iter(self.annotations)))
        self.label_map = first['label_map']

    def _load(self, split: str) -> dict:
        if split in self._cache:
            return self._cache[split]
        if split not in self.annotations:
            raise ValueError(f'coco_folder: no annotation file for split {split!r}')
        path = Path(self.annotations[split])
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f'coco_folder: cannot read annotation file {path}: {e}') from e
        for key in ('images', 'annotations', 'categories'):
            if not isinstance(data.get(key), list):
                raise ValueError(f'{path}: not a COCO annotation file (no {key!r} list)')
        categories = sorted(data['categories'], key=lambda c: c['id'])
        label_map = label_maps.LabelMap(
            tuple(c['name'] for c in categories), tuple(c['id'] for c in categories)
        )
        images = {}
        for im in data['images']:
            images[im['id']] = {'file': Path(self.image_dir) / im['file_name'], 'objects': []}
        for ann in data['annotations']:
            where = f'{path}: annotation id {ann.get("id")}'
            if ann.get('image_id') not in images:
                raise ValueError(f'{where} points to unknown image id {ann.get("image_id")}')
            bbox = ann.get('bbox')
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(f'{where} has a malformed bbox {bbox!r} (want [x, y, w, h])')
            if bbox[2] < 0 or bbox[3] < 0:
                raise ValueError(f'{where} has a negative-size box {bbox}')
            try:
                label = label_map.label_of(ann.get('category_id'))
            except ValueError as e:
                raise ValueError(f'{where}: {e}') from None
            x, y, w, h = (float(v) for v in bbox)
            images[ann['image_id']]['objects'].append(
                ([x, y, x + w, y + h], label, bool(ann.get('iscrowd', 0)))
            )
        self._check_files(path, images)
        self._cache[split] = {'label_map': label_map, 'images': images}
        return self._cache[split]

    def _check_files(self, path: Path, images: dict) -> None:
        missing = [str(im['file']) for im in images.values() if not im['file'].is_file()]
        if missing:
            raise ValueError(f'{path}: {len(missing)} image file(s) missing: {missing[:10]}')
        if not self.verify_images:
            return
        from PIL import Image

        bad = []
        for im in images.values():
            try:
                with Image.open(im['file']) as f:
                    f.verify()
            except Exception as e:  # PIL raises many types for corrupt files
                bad.append(f'{im["file"]} ({type(e).__name__})')
        if bad:
            raise ValueError(f'{path}: {len(bad)} unreadable image file(s): {bad[:10]}')

    def num_examples(self, split, process_index=0, process_count=1):
        start, stop = _even_range(len(self._load(split)['images']), process_index, process_count)
        return stop - start

    def raw(self, split, *, shuffle_files=False, seed=0, process_index=0, process_count=1):
        del shuffle_files, seed
        images = sorted(self._load(split)['images'].items())
        start, stop = _even_range(len(images), process_index, process_count)
        images = images[start:stop]
        files = [str(im['file']) for _, im in images]
        ids = [image_id for image_id, _ in images]

        def ragged(fn, dtype, inner=()):
            rows = [[fn(o) for o in im['objects']] for _, im in images]
            return tf.ragged.constant(rows, dtype=dtype, inner_shape=inner, ragged_rank=1)

        table = tf.data.Dataset.from_tensor_slices(
            (files, tf.constant(ids, tf.int64), ragged(lambda o: o[0], tf.float32, (4,)),
             ragged(lambda o: o[1], tf.int32), ragged(lambda o: o[2], tf.bool))
        )  # fmt: skip

        def decode(file, image_id, boxes, labels, crowd):
            image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
            image.set_shape([None, None, 3])
            return {'image': image, 'image_id': image_id, 'boxes': boxes, 'labels': labels,
                    'is_crowd': crowd}  # fmt: skip

        return table.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ------------------------------------------------------------------------------------- tfds


@dataclasses.dataclass
class TfdsSource(Source):
    """coco/2017 or voc/* through tensorflow-datasets (prepared under `data_dir`)."""

    name: str
    data_dir: str | None = None

    def __post_init__(self):
        self.label_map = label_maps.COCO if self.name.startswith('coco') else label_maps.VOC
        if self.name.startswith('voc'):
            self.voc_ap50 = '11_point' if self.name == 'voc/2007' else 'area'
        self._names = ['voc/2007', 'voc/2012'] if self.name == 'voc/2007+2012' else [self.name]

    def _builders(self):
        import tensorflow_datasets as tfds

        return [tfds.builder(n, data_dir=self.data_dir) for n in self._names]

    @staticmethod
    def _subsplit(split: str, process_index: int, process_count: int) -> str:
        import tensorflow_datasets as tfds

        return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]

    def num_examples(self, split, process_index=0, process_count=1):
        sub = self._subsplit(split, process_index, process_count)
        try:
            return sum(b.info.splits[sub].num_examples for b in self._builders())
        except KeyError:  # no split metadata (not prepared yet, or mocked): count them
            logging.warning(
                '%s: no size recorded for split %r; counting examples', self.name, split
            )
            ds = self.raw(split, process_index=process_index, process_count=process_count)
            return int(ds.reduce(0, lambda n, _: n + 1))

    def raw(self, split, *, shuffle_files=False, seed=0, process_index=0, process_count=1):
        import tensorflow_datasets as tfds

        sub = self._subsplit(split, process_index, process_count)
        read = tfds.ReadConfig(shuffle_seed=seed)
        datasets = [
            b.as_dataset(split=sub, shuffle_files=shuffle_files, read_config=read).map(
                self._to_raw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
            for b in self._builders()
        ]
        dataset = datasets[0]
        for more in datasets[1:]:
            dataset = dataset.concatenate(more)
        return dataset

    def _to_raw(self, example: dict) -> dict:
        image = example['image']
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        objects = example['objects']
        y1, x1, y2, x2 = tf.unstack(tf.reshape(objects['bbox'], [-1, 4]), axis=1)
        boxes = tf.stack([x1 * size[1], y1 * size[0], x2 * size[1], y2 * size[0]], axis=1)
        if self.name.startswith('coco'):
            image_id, crowd = example['image/id'], objects['is_crowd']
        else:  # VOC: ids from file names ('000005.jpg' -> 5, '2008_000008.jpg' -> 2008000008)
            digits = tf.strings.regex_replace(example['image/filename'], '[^0-9]', '')
            image_id, crowd = tf.strings.to_number(digits, tf.int64), objects['is_difficult']
        return {
            'image': image,
            'image_id': tf.cast(image_id, tf.int64),
            'boxes': boxes,
            'labels': tf.cast(objects['label'], tf.int32),
            'is_crowd': tf.cast(crowd, tf.bool),
        }


def make_source(name: str, **options) -> Source:
    """The source called `name` (one of KNOWN) with its options; ValueError if unknown."""
    if name == 'shapes':
        return ShapesSource(**options)
    if name == 'coco_folder':
        return CocoFolderSource(**options)
    if name in ('coco/2017', 'voc/2007', 'voc/2012', 'voc/2007+2012'):
        return TfdsSource(name, **options)
    raise ValueError(f'unknown dataset {name!r}; known: {", ".join(KNOWN)}')


logging.getLogger('tensorflow').setLevel(logging.ERROR)
