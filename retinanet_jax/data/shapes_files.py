"""The shapes data written as files, in each annotation format users bring: COCO json, Pascal
VOC XML, YOLO and CSV. The tests read them back through each source (the same examples in
every format), and they are a dataset to try each format's config on, with no download.

  write_coco_folder(folder, n)   -> coco_folder's options  (folder/images, train.json, ...)
  write_voc_folder(folder, n)    -> voc_folder's options   (the VOC layout)
  write_yolo_folder(folder, n)   -> yolo_folder's options  (data.yaml, images/, labels/)
  write_csv(folder, n)           -> csv's options          (train.csv, validation.csv)

Each holds the first `n` training examples of `shapes` at `image_size` as PNG files, split
`train` (every image) and `validation` (all but `not_in_validation`); the images in `empty`
are background only (the shapes' textured background, no object). Classes circle, square,
triangle; boxes are the shapes' exact pixel extents (integers), written in each format's own
convention (VOC: 1-based xmin / ymin; YOLO: normalised centre and size).
"""

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from retinanet_jax.data.shapes import background, generate_example

NAMES = ('circle', 'square', 'triangle')


def examples(num_images: int, image_size: int, empty=()) -> list[dict]:
    """{'index', 'image', 'boxes' [k, 4] xyxy, 'labels' [k]} of the first training examples;
    those in `empty` are background only."""
    out = []
    for i in range(num_images):
        e = generate_example(i, 'train', image_size=image_size)
        if i in set(empty):
            rng = np.random.default_rng([7, i])
            image = np.clip(np.rint(background(rng, image_size)), 0, 255).astype(np.uint8)
            e = {'image': image, 'boxes': np.zeros((0, 4), np.float32), 'labels': np.zeros(0)}
        out.append({'index': i, 'image': e['image'], 'boxes': e['boxes'], 'labels': e['labels']})
    return out


def _splits(items: list, not_in_validation) -> dict:
    kept = [e for e in items if e['index'] not in set(not_in_validation)]
    return {'train': items, 'validation': kept}


def _objects(e: dict) -> list:
    """[((x1, y1, x2, y2), label)] of an example, as Python numbers."""
    return list(zip(e['boxes'].tolist(), [int(v) for v in e['labels']], strict=True))


def write_coco_folder(
    folder, num_images: int, image_size: int = 64, *, not_in_validation=(), empty=()
) -> dict:
    """folder/images/<i>.png and folder/<split>.json (category ids 1, 2, 3; bbox [x, y, w, h]
    pixels). Returns coco_folder's options ({'annotations': {split: json}, 'image_dir'})."""
    folder = Path(folder)
    (folder / 'images').mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for e in examples(num_images, image_size, empty):
        i = e['index']
        Image.fromarray(e['image']).save(folder / 'images' / f'{i}.png')
        images.append({'id': i, 'file_name': f'{i}.png', 'height': image_size, 'width': image_size})
        for (x1, y1, x2, y2), label in _objects(e):
            annotations.append(
                {
                    'id': len(annotations),
                    'image_id': i,
                    'iscrowd': 0,
                    'category_id': int(label) + 1,
                    'bbox': [x1, y1, x2 - x1, y2 - y1],
                }
            )
    categories = [{'id': k + 1, 'name': name} for k, name in enumerate(NAMES)]
    kept = {
        'train': images,
        'validation': [im for im in images if im['id'] not in set(not_in_validation)],
    }
    for split, entries in kept.items():
        ids = {im['id'] for im in entries}
        coco = {
            'images': entries,
            'categories': categories,
            'annotations': [a for a in annotations if a['image_id'] in ids],
        }
        (folder / f'{split}.json').write_text(json.dumps(coco))
    return {
        'annotations': {split: str(folder / f'{split}.json') for split in kept},
        'image_dir': str(folder / 'images'),
    }


def write_voc_folder(
    folder, num_images: int, image_size: int = 64, *, not_in_validation=(), empty=()
) -> dict:
    """The VOC layout: Annotations/<i>.xml (1-based xmin / ymin), JPEGImages/<i>.png (lossless,
    whatever the folder's name), ImageSets/Main/<split>.txt. Returns voc_folder's options."""
    folder = Path(folder)
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    items = examples(num_images, image_size, empty)
    for e in items:
        stem = f'{e["index"]:06d}'
        Image.fromarray(e['image']).save(folder / 'JPEGImages' / f'{stem}.png')
        objects = ''.join(
            f'<object><name>{NAMES[int(label)]}</name><difficult>0</difficult><bndbox>'
            f'<xmin>{x1 + 1:g}</xmin><ymin>{y1 + 1:g}</ymin><xmax>{x2:g}</xmax>'
            f'<ymax>{y2:g}</ymax></bndbox></object>'
            for (x1, y1, x2, y2), label in zip(
                e['boxes'].tolist(), e['labels'].tolist(), strict=True
            )
        )
        (folder / 'Annotations' / f'{stem}.xml').write_text(
            f'<annotation><filename>{stem}.png</filename><size><width>{image_size}</width>'
            f'<height>{image_size}</height><depth>3</depth></size>{objects}</annotation>\n'
        )
    for split, entries in _splits(items, not_in_validation).items():
        lines = ''.join(f'{e["index"]:06d}\n' for e in entries)
        (folder / 'ImageSets' / 'Main' / f'{split}.txt').write_text(lines)
    return {'root': str(folder)}


def write_yolo_folder(
    folder, num_images: int, image_size: int = 64, *, not_in_validation=(), empty=()
) -> dict:
    """data.yaml (names; train: images/train, val: images/val), images/<split>/<i>.png and
    labels/<split>/<i>.txt (`class cx cy w h`, normalised; none for a background image).
    Returns yolo_folder's options."""
    folder = Path(folder)
    items = examples(num_images, image_size, empty)
    for split, entries in _splits(items, not_in_validation).items():
        key = 'val' if split == 'validation' else split
        (folder / 'images' / key).mkdir(parents=True, exist_ok=True)
        (folder / 'labels' / key).mkdir(parents=True, exist_ok=True)
        for e in entries:
            Image.fromarray(e['image']).save(folder / 'images' / key / f'{e["index"]}.png')
            if not len(e['boxes']):
                continue  # no label file: an image with no objects
            lines = []
            for (x1, y1, x2, y2), label in zip(
                e['boxes'].tolist(), e['labels'].tolist(), strict=True
            ):
                cx, cy = (x1 + x2) / 2 / image_size, (y1 + y2) / 2 / image_size
                w, h = (x2 - x1) / image_size, (y2 - y1) / image_size
                lines.append(f'{int(label)} {cx!r} {cy!r} {w!r} {h!r}\n')
            (folder / 'labels' / key / f'{e["index"]}.txt').write_text(''.join(lines))
    names = '\n'.join(f'  - {n}' for n in NAMES)
    (folder / 'data.yaml').write_text(f'train: images/train\nval: images/val\nnames:\n{names}\n')
    return {'data_yaml': str(folder / 'data.yaml')}


def write_csv(
    folder, num_images: int, image_size: int = 64, *, not_in_validation=(), empty=()
) -> dict:
    """folder/images/<i>.png and folder/<split>.csv (a header, one box a row; `path,,,,,` for a
    background image) with paths relative to the CSV. Returns csv's options."""
    folder = Path(folder)
    (folder / 'images').mkdir(parents=True, exist_ok=True)
    items = examples(num_images, image_size, empty)
    for e in items:
        Image.fromarray(e['image']).save(folder / 'images' / f'{e["index"]}.png')
    files = {}
    for split, entries in _splits(items, not_in_validation).items():
        files[split] = str(folder / f'{split}.csv')
        with open(files[split], 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['image_path', 'xmin', 'ymin', 'xmax', 'ymax', 'label'])
            for e in entries:
                path = f'images/{e["index"]}.png'
                if not len(e['boxes']):
                    writer.writerow([path, '', '', '', '', ''])
                for box, label in _objects(e):
                    writer.writerow([path, *(f'{v:g}' for v in box), NAMES[int(label)]])
    return {'files': files}
