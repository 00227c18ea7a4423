"""`coco_folder`: your own data in COCO format, one annotation json per split and an image folder.

  make_source('coco_folder', annotations={'train': 'train.json', 'val': 'val.json'},
              image_dir='images/', exif='ignore', verify_images=True, skip_bad_images=False)

`image_dir` is one folder for every split, or a split -> folder mapping (COCO itself:
{'train': 'train2017/', 'validation': 'val2017/'} with instances_train2017.json and
instances_val2017.json as the annotations).

Each json is read and checked when its split is first used. COCO's own conventions apply:
  - category ids may be any integers, with gaps: labels are their sorted order (label_maps.py);
  - `iscrowd` regions are kept for evaluation (pycocotools ignores detections on them) and are
    never training targets;
  - boxes are [x, y, width, height] in the image's stored pixels ('exif' below); a box that
    reaches outside the image is clipped to it by the pipeline (torchvision's and detectron2's
    COCO loaders do the same); a zero-size box is kept for evaluation (as pycocotools does) and
    dropped from the training targets (below 1 pixel), with a warning naming the annotation ids;
  - a file without an 'annotations' list (COCO's image-info files) has no objects.
Refused, with a ValueError naming the file and the record: a missing 'images' or 'categories'
list, duplicate image or category ids, an annotation of an unknown image or category, a
malformed or negative-size box, a box entirely outside its image, a missing image file, and
(with `verify_images`, PIL's structural check) an unreadable one. `skip_bad_images=True` leaves
unreadable images out of the split instead, with a warning naming each. An image whose decoded
size differs from the json's height / width is refused when it is read.

`exif`: 'ignore' (default) reads pixels as stored, the convention of COCO annotations; 'apply'
turns them upright first (data/images.py), for annotations drawn on upright photos.
"""

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from retinanet_jax.data import images, label_maps
from retinanet_jax.data.file_source import FileSource, check_files
from retinanet_jax.errors import UserError


@dataclasses.dataclass
class CocoFolderSource(FileSource):
    annotations: dict
    image_dir: str | dict
    exif: str = 'ignore'
    verify_images: bool = True
    skip_bad_images: bool = False
    name: str = 'coco_folder'

    def __post_init__(self):
        if not isinstance(self.annotations, dict) or not self.annotations:
            raise UserError(
                f'coco_folder: annotations must map split -> json file, got {self.annotations!r}'
            )
        if self.exif not in images.EXIF_MODES:
            raise UserError(
                f'coco_folder: exif must be one of {images.EXIF_MODES}, got {self.exif!r}'
            )
        self._cache = {}
        self.label_map = self._load(next(iter(self.annotations)))['label_map']

    # ------------------------------------------------------------------------- reading
    def _load(self, split: str) -> dict:
        if split in self._cache:
            return self._cache[split]
        if split not in self.annotations:
            raise UserError(
                f'coco_folder: no annotation file for split {split!r}; '
                f'known: {sorted(self.annotations)}'
            )
        path = Path(self.annotations[split])
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f'coco_folder: cannot read annotation file {path}: {e}') from e
        if not isinstance(data, dict):
            raise UserError(f'{path}: not a COCO annotation file (not a JSON object)')
        for key in ('images', 'categories'):
            if not isinstance(data.get(key), list):
                raise UserError(f'{path}: not a COCO annotation file (no {key!r} list)')
        label_map = _label_map(path, data['categories'])
        image_dir = self.image_dir
        if isinstance(image_dir, dict):
            if split not in image_dir:
                raise UserError(
                    f'coco_folder: no image_dir for split {split!r}; known: {sorted(image_dir)}'
                )
            image_dir = image_dir[split]
        records = _images(path, data['images'], Path(image_dir))
        _add_objects(path, data.get('annotations', []), records, label_map)
        records = [records[i] for i in sorted(records)]
        records = check_files(path, records, self.verify_images, self.skip_bad_images, self.name)
        loaded = {'label_map': label_map, 'records': records}
        self._cache[split] = loaded
        return loaded

    def split_records(self, split):
        return self._load(split)['records']


def _label_map(path: Path, categories: list) -> label_maps.LabelMap:
    ids = []
    for c in categories:
        if not isinstance(c, dict) or not isinstance(c.get('id'), int):
            raise UserError(f'{path}: category {c!r} has no integer id')
        ids.append(c['id'])
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f'{path}: duplicate category ids {duplicates}')
    if not ids:
        raise UserError(f'{path}: the categories list is empty')
    ordered = sorted(categories, key=lambda c: c['id'])
    return label_maps.LabelMap(
        tuple(str(c.get('name', c['id'])) for c in ordered), tuple(c['id'] for c in ordered)
    )


def _images(path: Path, entries: list, image_dir: Path) -> dict:
    records = {}
    for im in entries:
        if not isinstance(im, dict) or 'id' not in im or 'file_name' not in im:
            raise UserError(f'{path}: image record {im!r} lacks an id or a file_name')
        if im['id'] in records:
            raise UserError(f'{path}: duplicate image id {im["id"]}')
        h, w = im.get('height'), im.get('width')
        records[im['id']] = {
            'id': im['id'],
            'file': image_dir / im['file_name'],
            'key': str(im['file_name']),
            'height': int(h) if h is not None and w is not None else None,
            'width': int(w) if h is not None and w is not None else None,
            'objects': [],
        }
    return records


def _add_objects(path: Path, annotations: list, records: dict, label_map) -> None:
    zero = []
    for ann in annotations:
        where = f'{path}: annotation id {ann.get("id")}'
        record = records.get(ann.get('image_id'))
        if record is None:
            raise UserError(f'{where} points to unknown image id {ann.get("image_id")}')
        bbox = ann.get('bbox')
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, int | float) and np.isfinite(v) for v in bbox)
        ):
            raise UserError(f'{where} has a malformed bbox {bbox!r} (want [x, y, w, h])')
        if bbox[2] < 0 or bbox[3] < 0:
            raise UserError(f'{where} has a negative-size box {bbox}')
        try:
            label = label_map.label_of(ann.get('category_id'))
        except ValueError as e:
            raise UserError(f'{where}: {e}') from None
        x, y, w, h = (float(v) for v in bbox)
        if (
            record['height'] is not None
            and (x >= record['width'] or y >= record['height'] or x + w <= 0 or y + h <= 0)
            and w * h > 0
        ):
            raise UserError(
                f'{where}: box {bbox} lies entirely outside its '
                f'{record["height"]}x{record["width"]} image'
            )
        if w == 0 or h == 0:
            zero.append(ann.get('id'))
        area = ann.get('area')
        area = float(area) if isinstance(area, int | float) else w * h
        record['objects'].append(([x, y, x + w, y + h], label, bool(ann.get('iscrowd', 0)), area))
    if zero:
        logging.warning(
            '%s: %d zero-size box(es), kept for evaluation, not trained on: annotation ids %s',
            path,
            len(zero),
            zero[:10],
        )
    for r in records.values():
        objects = r.pop('objects')
        r['boxes'] = np.asarray([o[0] for o in objects], np.float32).reshape(-1, 4)
        r['labels'] = np.asarray([o[1] for o in objects], np.int32)
        r['is_crowd'] = np.asarray([o[2] for o in objects], bool)
        r['area'] = np.asarray([o[3] for o in objects], np.float32)
