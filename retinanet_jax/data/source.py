"""Source: random access to raw examples of one common format (numpy), the interface that
every dataset source implements.

  source.num_examples(split) -> n
  source.example(split, i) -> {                 i in [0, n), any order, any thread
      'image'     uint8 [H, W, 3] RGB
      'image_id'  int64 []          the dataset's image id (COCO id, VOC file number, ...)
      'boxes'     float32 [k, 4]    xyxy, absolute pixels of the original image
      'labels'    int32 [k]         contiguous training labels 0..K-1 (see label_maps.py)
      'is_crowd'  bool [k]          COCO crowd regions / VOC 'difficult' objects: kept for
                                    evaluation, never used as training targets
  }
  source.records(split) -> a sequence (len, [i]) of those examples, for grain
  source.ground_truth(split) -> iterator of ground truth without decoding pixels, in record
      order: {'image_id', 'height', 'width', 'boxes', 'labels', 'is_crowd', 'area'}
      ('area' [k]: the object's area, COCO's segmentation area where the dataset has one)
  source.label_map, source.voc_ap50 (PASCAL VOC's AP50 convention, None off VOC)
  source.background_images(split) -> images with no object, where known at no cost (else None)

The sources (sources.py: make_source): `shapes` (synthetic, no download; shapes.py),
`coco_folder`, `voc_folder`, `yolo_folder` and `csv` (your own labelled image files, in the
format your labelling tool writes: file_source.py and one module each) and `coco/2017`,
`voc/2007`, `voc/2012`, `voc/2007+2012` through tensorflow-datasets (tfds_sources.py). Which
records each process reads, and in which order, is the pipeline's business (pipeline.py):
sources only answer "record i".
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

from retinanet_jax.data import label_maps
from retinanet_jax.errors import UserError


class Source:
    """A dataset: its label map, its split sizes and random access to its raw examples."""

    label_map: label_maps.LabelMap
    voc_ap50: str | None = None  # '11_point' (VOC 2007) or 'area' (VOC 2010+) on VOC data
    name: str = ''

    def num_examples(self, split: str) -> int:
        raise NotImplementedError

    def example(self, split: str, index: int) -> dict:
        raise NotImplementedError

    def ground_truth(self, split: str) -> Iterator[dict]:
        """Ground truth of every record of `split`, in order (default: decodes each example)."""
        for i in range(self.num_examples(split)):
            e = self.example(split, i)
            boxes = np.asarray(e['boxes'], np.float32).reshape(-1, 4)
            yield {
                'image_id': int(e['image_id']),
                'height': int(e['image'].shape[0]),
                'width': int(e['image'].shape[1]),
                'boxes': boxes,
                'labels': np.asarray(e['labels'], np.int32),
                'is_crowd': np.asarray(e['is_crowd'], bool),
                'area': (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            }

    def image_files(self, split: str, image_ids) -> list[str]:
        """The files of these images of `split`, for messages, where the source reads image
        files (else none)."""
        del split, image_ids
        return []

    def background_images(self, split: str) -> int | None:
        """How many images of `split` hold no object (background only), where the source knows
        without reading the split (else None)."""
        del split
        return None

    def records(self, split: str) -> 'Records':
        return Records(self, split, self.num_examples(split))


@dataclasses.dataclass(frozen=True)
class Records:
    """Split `split` of `source` as a sequence: len() and [i] (grain's random-access source)."""

    source: Source
    split: str
    size: int

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(f'{self.source.name} {self.split}: record {index} of {self.size}')
        example = self.source.example(self.split, int(index))
        where = f'{self.source.name} {self.split} record {index}'
        return check_example(example, where, self.source.label_map.num_classes)


def check_example(example: dict, where: str, num_classes: int) -> dict:
    """The raw example with its fields in the common dtypes; ValueError naming `where` and the
    image id if a label is outside [0, num_classes), a box has negative size or a non-finite
    coordinate, or the image is not [H, W, 3] uint8."""
    where = f'{where} (image id {example.get("image_id")})'
    image = np.asarray(example['image'])
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise UserError(f'{where}: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}')
    boxes = np.asarray(example['boxes'], np.float32).reshape(-1, 4)
    labels = np.asarray(example['labels'], np.int32).reshape(-1)
    crowd = np.asarray(example['is_crowd'], bool).reshape(-1)
    if not len(boxes) == len(labels) == len(crowd):
        raise UserError(f'{where}: {len(boxes)} boxes, {len(labels)} labels, {len(crowd)} flags')
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise UserError(f'{where}: label {int(bad[0])} outside [0, {num_classes})')
    if not np.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any():
        raise UserError(f'{where}: a box with negative size or a non-finite coordinate')
    return {
        'image': image,
        'image_id': np.int64(example['image_id']),
        'boxes': boxes,
        'labels': labels,
        'is_crowd': crowd,
    }
