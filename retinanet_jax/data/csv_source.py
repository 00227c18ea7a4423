"""`csv`: one box per row, as keras-retinanet and DeepForest read them.

  make_source('csv', files={'train': 'train.csv', 'validation': 'val.csv'})
  make_source('csv', files='all.csv', split_fractions={'train': 0.8, 'validation': 0.2})
  options: classes='classes.csv' (or a list of names), image_dir=None, exif='ignore',
           verify_images=True

Each row: `image_path,xmin,ymin,xmax,ymax,label` in pixels of the stored image, xyxy; an
optional first row of exactly those column names is a header. A row whose coordinates and
label are all empty (`image.jpg,,,,,`) is an image with no objects (keras-retinanet's
convention); an image's rows may be anywhere in the file. Paths are relative to `image_dir`
(default: the CSV file's folder). Classes: the `classes` file (keras-retinanet's
`name,id` rows, ordered by id; or one name a line) or list, in its order, or else the sorted
labels of every split; labels are 0..K-1 and category ids 1..K.

Refused, with a UserError naming the file and the row: a row of other than six columns, a
non-numeric or partly empty coordinate, xmin > xmax or ymin > ymax, a box reaching outside the
image, a label not in the class list, a missing image file. With `split_fractions` the images
of every file form one set, cut by a hash of each image's path (file_source.split_of).
"""

import csv
import dataclasses
import math
from pathlib import Path

from retinanet_jax.data import images, label_maps
from retinanet_jax.data.file_source import FileSource, make_record, per_split, relative_keys
from retinanet_jax.errors import MissingFile, UserError

COLUMNS = ('image_path', 'xmin', 'ymin', 'xmax', 'ymax', 'label')


@dataclasses.dataclass
class CsvSource(FileSource):
    files: str | dict = ''
    split_fractions: dict | None = None
    classes: str | list | tuple | None = None
    image_dir: str | None = None
    exif: str = 'ignore'
    verify_images: bool = True
    name: str = 'csv'

    def __post_init__(self):
        files = per_split(self.files, self.split_fractions, self.name, 'CSV file')
        rows = {split: _read_rows(Path(f)) for split, f in files.items()}
        names = self._names(rows)
        self.label_map = label_maps.LabelMap.contiguous(tuple(names))
        index = {n: k for k, n in enumerate(names)}
        folders = {s: Path(self.image_dir or Path(files[s]).parent) for s in files}
        for split, split_rows in rows.items():
            for r in split_rows:
                r['file'] = folders[split] / r['image_path']
        keys = relative_keys(sorted({r['file'] for s in rows.values() for r in s}))
        ids = {key: k for k, key in enumerate(sorted(keys.values()))}
        records = {s: self._records(r, keys, ids, index) for s, r in rows.items()}
        self.set_splits(records, self.split_fractions)

    def _names(self, rows: dict) -> list[str]:
        used = sorted({r['label'] for split in rows.values() for r in split if r['label']})
        if self.classes is None:
            return used
        names = _class_list(self.classes)
        missing = [n for n in used if n not in names]
        if missing:
            where = next(r['where'] for s in rows.values() for r in s if r['label'] in missing)
            raise UserError(f'{where}: label {missing[0]!r} is not in the class list {names}')
        return names

    def _records(self, rows: list[dict], keys: dict, ids: dict, index: dict) -> list[dict]:
        by_image = {}
        for r in rows:
            by_image.setdefault(r['file'], []).append(r)
        records = []
        for file in sorted(by_image, key=lambda f: keys[f]):
            key = keys[file]
            if not file.is_file():
                raise MissingFile(f'{by_image[file][0]["where"]}: image {file} is missing')
            height, width = images.image_size(file, self.exif)
            objects = []
            for r in by_image[file]:
                if r['box'] is None:
                    continue
                x1, y1, x2, y2 = r['box']
                if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                    raise UserError(
                        f'{r["where"]}: box {r["box"]} reaches outside the {height}x{width} '
                        f'image {file}'
                    )
                objects.append((r['box'], index[r['label']], False))
            records.append(make_record(ids[key], file, key, height, width, objects))
        return records


def _read_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline='') as f:
            table = list(csv.reader(f))
    except FileNotFoundError:
        raise MissingFile(f'csv: no such file {path}') from None
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(f'{path}: cannot read it as CSV ({e})') from None
    rows = []
    for n, row in enumerate(table, 1):
        where = f'{path}: row {n}'
        if n == 1 and tuple(c.strip() for c in row) == COLUMNS:
            continue  # the header
        if not any(c.strip() for c in row):
            continue  # a blank line
        if len(row) != len(COLUMNS):
            raise UserError(
                f'{where}: {len(row)} columns, want {len(COLUMNS)} ({",".join(COLUMNS)})'
            )
        image_path, *coords, label = (c.strip() for c in row)
        if not image_path:
            raise UserError(f'{where}: no image_path')
        if not any(coords) and not label:
            rows.append({'where': where, 'image_path': image_path, 'box': None, 'label': ''})
            continue
        try:
            box = [float(c) for c in coords]
        except ValueError:
            raise UserError(f'{where}: xmin, ymin, xmax, ymax must be numbers: {row}') from None
        if not all(math.isfinite(v) for v in box):
            raise UserError(f'{where}: a coordinate is not finite: {row}')
        if not label:
            raise UserError(f'{where}: a box with no label: {row}')
        if box[0] > box[2] or box[1] > box[3]:
            raise UserError(f'{where}: xmin > xmax or ymin > ymax in {box}')
        rows.append({'where': where, 'image_path': image_path, 'box': box, 'label': label})
    return rows


def _class_list(classes) -> list[str]:
    """Names from a list, or a file: keras-retinanet's `name,id` rows (ordered by id) or one
    name a line."""
    if isinstance(classes, list | tuple):
        names = [str(c) for c in classes]
    else:
        path = Path(classes)
        if not path.is_file():
            raise MissingFile(f'csv: class list {path} does not exist')
        rows = [r for r in csv.reader(path.read_text().splitlines()) if r and r[0].strip()]
        if rows and all(len(r) == 2 for r in rows):
            try:
                rows = sorted(rows, key=lambda r: int(r[1]))
            except ValueError:
                raise UserError(f'{path}: want `name,id` rows with integer ids') from None
        names = [r[0].strip() for r in rows]
    if not names or len(set(names)) != len(names):
        raise UserError(f'csv: classes must be distinct names, got {names}')
    return names
