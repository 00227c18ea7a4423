"""COCO 2017 and PASCAL VOC through tensorflow-datasets, read with random access.

  make_source('coco/2017' | 'voc/2007' | 'voc/2012' | 'voc/2007+2012', data_dir=None)

Records come from tfds' random-access data sources (`builder.as_data_source`), which need the
dataset prepared in the array_record file format:
  tfds build coco/2017 --file_format=array_record [--data_dir=DIR]
A dataset already prepared as TFRecord (tfds' default before) converts in place once:
  tfds convert_format --dataset_dir=DIR/coco/2017/1.1.0 --out_file_format=array_record
Why: the training order is a permutation of record indices (pipeline.py), so that a resumed
run reads only what it still needs; TFRecord files can only be read front to back. Without
prepared data the error says where tfds looked and names both ways forward (or the
coco_folder source over the COCO json and image folders most users already have).

Boxes: tfds' normalised (ymin, xmin, ymax, xmax) -> xyxy pixels. COCO keeps its image ids,
crowd flags and segmentation areas (for COCO's small / medium / large split); VOC's image ids
come from the file names ('000005.jpg' -> 5, '2008_000008.jpg' -> 2008000008) and its
'difficult' objects are marked crowd (ignored by evaluation, never trained on).
"""

import dataclasses
import io

import numpy as np

from retinanet_jax.data import label_maps
from retinanet_jax.data.source import Source
from retinanet_jax.errors import UserError

NAMES = ('coco/2017', 'voc/2007', 'voc/2012', 'voc/2007+2012')
# What a user who has the dataset's own files gives a folder source instead (data/sources.py).
_FOLDER_HINT = {
    'coco': "data.dataset='coco_folder' with annotations (e.g. instances_train2017.json for "
    'train) and image_dir (e.g. train2017/)',
    'voc': "data.dataset='voc_folder' with root (e.g. VOCdevkit/VOC2007)",
}


@dataclasses.dataclass
class TfdsSource(Source):
    name: str
    data_dir: str | None = None

    def __post_init__(self):
        if self.name not in NAMES:
            raise UserError(f'unknown tfds dataset {self.name!r}; known: {NAMES}')
        self.coco = self.name.startswith('coco')
        self.label_map = label_maps.COCO if self.coco else label_maps.VOC
        if not self.coco:  # VOC 2007's 11-point AP, the area under the curve after
            self.voc_ap50 = '11_point' if self.name == 'voc/2007' else 'area'
        self._parts = ['voc/2007', 'voc/2012'] if self.name == 'voc/2007+2012' else [self.name]
        self._sources = {}

    def _data_sources(self, split: str, decode_images: bool = True) -> list:
        key = (split, decode_images)
        if key not in self._sources:
            self._sources[key] = [self._open(part, split, decode_images) for part in self._parts]
        return self._sources[key]

    def _open(self, part: str, split: str, decode_images: bool):
        import tensorflow_datasets as tfds
        from absl import logging as absl_logging

        decoders = None if decode_images else {'image': tfds.decode.SkipDecoding()}
        verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)  # tfds' notes on missing metadata
        try:
            builder = tfds.builder(part, data_dir=self.data_dir)
            return builder.as_data_source(split=split, decoders=decoders)
        except (NotImplementedError, AssertionError, FileNotFoundError, ValueError, KeyError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            prepared = builder.is_prepared()
            if isinstance(e, NotImplementedError) and prepared:
                raise UserError(
                    f'{part} in {builder.data_dir} is prepared as TFRecord, which has no random '
                    f'access; convert it once: tfds convert_format '
                    f'--dataset_version_dir={builder.data_dir} --out_file_format=array_record'
                ) from None
            if not prepared:
                reason = 'not prepared'
            raise UserError(
                f'{part} split {split!r}: no data in {builder.data_dir} ({reason}). '
                f'Either prepare it: `tfds build {part} --file_format=array_record` (or set '
                f'data_dir to where it is), or train from the files you have with a folder '
                f'source in a config file: {_FOLDER_HINT[part.split("/")[0]]} (docs/datasets.md)'
            ) from None
        finally:
            absl_logging.set_verbosity(verbosity)

    def num_examples(self, split):
        return sum(len(s) for s in self._data_sources(split))

    def _locate(self, split: str, index: int, decode_images: bool = True):
        for source in self._data_sources(split, decode_images):
            if index < len(source):
                return source[index]
            index -= len(source)
        raise IndexError(f'{self.name} {split}: record index out of range')

    def example(self, split, index):
        e = self._locate(split, index)
        image = np.asarray(e['image'])
        boxes, labels, crowd, _ = self._objects(e, image.shape[:2])
        return {
            'image': image,
            'image_id': self._image_id(e),
            'boxes': boxes,
            'labels': labels,
            'is_crowd': crowd,
        }

    def ground_truth(self, split):
        """From the records with their images left encoded: sizes are read from the header."""
        from PIL import Image

        for i in range(self.num_examples(split)):
            e = self._locate(split, i, decode_images=False)
            image = e['image']
            if isinstance(image, bytes | np.bytes_):
                with Image.open(io.BytesIO(image)) as f:
                    w, h = f.size
            else:
                h, w = np.asarray(image).shape[:2]
            boxes, labels, crowd, area = self._objects(e, (h, w))
            yield {
                'image_id': int(self._image_id(e)),
                'height': h,
                'width': w,
                'boxes': boxes,
                'labels': labels,
                'is_crowd': crowd,
                'area': area,
            }

    def _objects(self, e: dict, hw) -> tuple:
        objects = e['objects']
        h, w = hw
        y1, x1, y2, x2 = np.asarray(objects['bbox'], np.float32).reshape(-1, 4).T
        boxes = np.stack([x1 * w, y1 * h, x2 * w, y2 * h], axis=1).astype(np.float32)
        crowd = np.asarray(objects['is_crowd' if self.coco else 'is_difficult'], bool)
        if self.coco and 'area' in objects:
            area = np.asarray(objects['area'], np.float32)  # the segmentation's area
        else:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes, np.asarray(objects['label'], np.int32), crowd, area

    def _image_id(self, e: dict) -> np.int64:
        if self.coco:
            return np.int64(e['image/id'])
        name = e['image/filename']
        name = name.decode() if isinstance(name, bytes | np.bytes_) else str(name)
        return np.int64(''.join(c for c in name if c.isdigit()))
