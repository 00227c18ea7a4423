"""`yolo_folder`: the ultralytics (YOLO) layout, what every ultralytics user has.

  make_source('yolo_folder', data_yaml='data/data.yaml')
  make_source('yolo_folder', data_yaml='data/data.yaml', split_fractions={'train': 0.8,
              'validation': 0.2})       # every listed image as one set, split by hash
  options: exif='apply', verify_images=True

data.yaml: `names` (a list, or {index: name}), `path` (the dataset root; default the yaml's
folder) and the image folders of each split (`train: images/train`, `val: images/val`, `test:
...`, a folder or a list of them, relative to `path`; a `../x` that is not there is looked for
as `x`, as ultralytics does for Roboflow's exports). The splits are the yaml's keys;
`validation` also reaches `val` (the name our configs use). Images are read upright by their
EXIF orientation (`exif='apply'`), as ultralytics reads them and so as its labels mean them.
Each image's labels are the same path with `images` -> `labels` and the suffix .txt
(ultralytics' rule): one object a line, `class cx cy w h`, normalised to the image's width and
height (0..1). A missing or empty label file is an image with no objects.

Labels are the class indices (0..K-1; category ids the same indices). Boxes are computed in
float64 and stored as float32 pixels of the image's size (read from the file's header):
x1 = (cx - w / 2) * W, ... Refused, with a UserError naming the file and the line: a line of
other than five numbers, a non-numeric value, a class index outside `names`, a coordinate
outside [0, 1] (ultralytics refuses those too), a negative size, a missing image folder.
"""

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

import yaml

from retinanet_jax.data import images, label_maps
from retinanet_jax.data.file_source import FileSource, make_record, relative_keys
from retinanet_jax.errors import MissingFile, UserError

SPLIT_KEYS = ('train', 'val', 'test')
ALIASES = {'validation': 'val'}


@dataclasses.dataclass
class YoloFolderSource(FileSource):
    data_yaml: str = ''
    split_fractions: dict | None = None
    exif: str = 'apply'
    verify_images: bool = True
    name: str = 'yolo_folder'
    aliases: ClassVar[dict] = ALIASES

    def __post_init__(self):
        if not self.data_yaml:
            raise UserError("yolo_folder: give data_yaml, the dataset's data.yaml")
        path = Path(self.data_yaml)
        try:
            spec = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise MissingFile(f'yolo_folder: no such file {path}') from None
        except yaml.YAMLError as e:
            raise UserError(f'{path}: not valid YAML ({e})') from None
        if not isinstance(spec, dict) or 'names' not in spec:
            raise UserError(f'{path}: no `names` list of the classes')
        names = spec['names']
        if isinstance(names, dict):
            if sorted(names) != list(range(len(names))):
                raise UserError(f'{path}: names must be indexed 0..K-1, got {sorted(names)}')
            names = [names[k] for k in range(len(names))]
        if not isinstance(names, list) or not names:
            raise UserError(f'{path}: names must be a non-empty list, got {names!r}')
        self.label_map = label_maps.LabelMap.contiguous(tuple(map(str, names)), first_id=0)
        root = (path.parent / spec['path']) if spec.get('path') else path.parent
        folders = {k: spec[k] for k in SPLIT_KEYS if spec.get(k)}
        if not folders:
            raise UserError(f'{path}: no image folder for any of {SPLIT_KEYS}')
        files = {split: _split_images(path, root, f) for split, f in folders.items()}
        keys = relative_keys(sorted({f for fs in files.values() for f in fs}))
        ids = {key: k for k, key in enumerate(sorted(keys.values()))}
        records = {
            s: [self._record(ids[keys[f]], f, keys[f]) for f in fs] for s, fs in files.items()
        }
        self.set_splits(records, self.split_fractions)

    def _record(self, image_id: int, image: Path, key: str) -> dict:
        label_file = label_path(image)
        lines = label_file.read_text().splitlines() if label_file.is_file() else []
        objects = []
        if any(line.strip() for line in lines):
            height, width = images.image_size(image, self.exif)
            for n, line in enumerate(lines, 1):
                if line.strip():
                    objects.append(_object(f'{label_file}:{n}', line, height, width, self))
        return make_record(image_id, image, key, None, None, objects)


def label_path(image: Path) -> Path:
    """ultralytics' img2label_paths: the last /images/ of the path -> /labels/, suffix .txt."""
    parts = list(image.parts)
    k = len(parts) - 1 - parts[::-1].index('images') if 'images' in parts else None
    if k is None:
        return image.with_suffix('.txt')
    parts[k] = 'labels'
    return Path(*parts).with_suffix('.txt')


def _split_images(yaml_path: Path, root: Path, folders) -> list[Path]:
    """The image files of a split's folder or list of folders, sorted."""
    out = []
    for folder in folders if isinstance(folders, list) else [folders]:
        where = root / str(folder)
        if not where.exists() and str(folder).startswith('../'):
            where = root / str(folder)[3:]  # ultralytics' retry (Roboflow's exports)
        if not where.is_dir():
            raise MissingFile(f'{yaml_path}: image folder {root / str(folder)} does not exist')
        out += sorted(p for p in where.rglob('*') if p.suffix.lower() in images.IMAGE_SUFFIXES)
    return out


def _object(where: str, line: str, height: int, width: int, source) -> tuple:
    values = line.split()
    if len(values) != 5:
        raise UserError(f'{where}: {len(values)} values, want 5 (class cx cy w h): {line!r}')
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise UserError(f'{where}: not a number in {line!r}') from None
    label, cx, cy, w, h = numbers
    num_classes = source.label_map.num_classes
    if not math.isfinite(label) or label != int(label) or not 0 <= label < num_classes:
        raise UserError(f'{where}: class {values[0]} is not in names (0..{num_classes - 1})')
    if not all(0 <= v <= 1 for v in (cx, cy, w, h)):
        raise UserError(f'{where}: coordinates must be normalised to [0, 1]: {line!r}')
    box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
    return box, int(label), False
