"""`voc_folder`: Pascal VOC XML annotations, one file per image (LabelImg, CVAT, Roboflow).

  make_source('voc_folder', root='VOCdevkit/VOC2007')             # the VOC layout
  make_source('voc_folder', folders={'train': 'a/', 'validation': 'b/'})   # flat folders
  make_source('voc_folder', folders='labelled/', split_fractions={'train': 0.8,
              'validation': 0.2})                                  # one set, split by hash
  options: classes=('cat', 'dog') (a fixed class list), coordinates='voc' | 'pixels',
           exif='ignore', verify_images=True

The VOC layout: root/Annotations/<id>.xml, root/JPEGImages/<id>.<ext> (the xml's <filename>),
root/ImageSets/Main/<split>.txt (one id a line; any split name). A flat folder holds images and
same-stem .xml files; an image without one has no objects. With `split_fractions` every image
of `root` (all of Annotations/) or of `folders` forms one set, cut by a hash of each file's
path (file_source.split_of): the same image lands in the same split whatever else is there.

Classes are the `<name>`s of every split, sorted (labels 0..K-1, category ids 1..K), or the
fixed `classes` list, in its order: a name outside it is refused. `<difficult>1</difficult>`
objects are kept for evaluation and ignored there (as VOC's metric does, like COCO crowds) and
are never training targets. `<size>` must agree with the image file.

Coordinates ('coordinates'): 'voc' (default) reads xmin..xmax as VOC's 1-based inclusive pixel
indices, as the VOC devkit, detectron2 and tensorflow-datasets do: x1 = xmin - 1, x2 = xmax (a
box 1..W covers the whole image); 'pixels' reads them as plain xyxy pixel coordinates, as
tools that write 0-based boxes mean them. Refused, with a UserError naming the file and the
object: malformed XML, a missing <name> / <bndbox> / coordinate, xmin > xmax or ymin > ymax, a
box reaching outside <size>, an unknown class, a missing image file, a <size> that disagrees
with the image.
"""

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

from retinanet_jax.data import images, label_maps
from retinanet_jax.data.file_source import FileSource, make_record, per_split, relative_keys
from retinanet_jax.errors import MissingFile, UserError

COORDINATES = ('voc', 'pixels')


@dataclasses.dataclass
class VocFolderSource(FileSource):
    root: str | None = None
    folders: str | dict | None = None
    split_fractions: dict | None = None
    classes: tuple | list | None = None
    coordinates: str = 'voc'
    exif: str = 'ignore'
    verify_images: bool = True
    name: str = 'voc_folder'

    def __post_init__(self):
        if (self.root is None) == (self.folders is None):
            raise UserError('voc_folder: give root (the VOC layout) or folders, not both')
        if self.coordinates not in COORDINATES:
            raise UserError(
                f'voc_folder: coordinates must be one of {COORDINATES}, got {self.coordinates!r}'
            )
        files = self._annotated_files()  # {split: [(image, xml or None, key)]}
        parsed = {s: [_parse(x, i) if x else None for i, x, _ in f] for s, f in files.items()}
        names = self._names(parsed)
        self.label_map = label_maps.LabelMap.contiguous(tuple(names))
        index = {n: k for k, n in enumerate(names)}
        keys = sorted({key for f in files.values() for _, _, key in f})
        ids = {key: k for k, key in enumerate(keys)}  # an image's id: in every split the same
        records = {
            split: [
                self._record(ids[key], image, xml, key, p, index)
                for (image, xml, key), p in zip(entries, parsed[split], strict=True)
            ]
            for split, entries in files.items()
        }
        self.set_splits(records, self.split_fractions)

    def _annotated_files(self) -> dict[str, list]:
        if self.root is not None:
            root = Path(self.root)
            if not (root / 'Annotations').is_dir():
                raise MissingFile(f'voc_folder: {root} has no Annotations/ folder (VOC layout)')
            if self.split_fractions is not None:
                xmls = sorted((root / 'Annotations').glob('*.xml'))
                return {'all': [(None, x, x.stem) for x in xmls]}
            sets = sorted((root / 'ImageSets' / 'Main').glob('*.txt'))
            sets = [s for s in sets if '_' not in s.stem]  # not the per-class lists
            if not sets:
                raise MissingFile(f'voc_folder: {root}/ImageSets/Main holds no <split>.txt')
            out = {}
            for s in sets:
                stems = [line.split()[0] for line in s.read_text().splitlines() if line.strip()]
                out[s.stem] = [(None, root / 'Annotations' / f'{x}.xml', x) for x in stems]
            return out
        folders = per_split(self.folders, self.split_fractions, self.name, 'folder')
        out = {split: _flat_folder(Path(folder)) for split, folder in folders.items()}
        keys = relative_keys([image for entries in out.values() for image, _, _ in entries])
        return {s: [(i, x, keys[i]) for i, x, _ in entries] for s, entries in out.items()}

    def _names(self, parsed: dict) -> list[str]:
        used = {o['name'] for split in parsed.values() for p in split if p for o in p['objects']}
        if self.classes is None:
            return sorted(used)
        names = [str(c) for c in self.classes]
        if len(set(names)) != len(names) or not names:
            raise UserError(f'voc_folder: classes must be distinct names, got {self.classes!r}')
        return names

    def _record(self, image_id, image, xml, key, parsed, index) -> dict:
        if parsed is None:  # a flat folder's image without an xml: no objects
            return make_record(image_id, image, key, None, None, [])
        if image is None:  # the VOC layout: the xml names its image
            image = Path(self.root) / 'JPEGImages' / parsed['filename']
        if not image.is_file():
            raise MissingFile(f'{xml}: its image {image} is missing')
        height, width = parsed['size'] or (None, None)
        if height is not None:
            actual = images.image_size(image, self.exif)
            if actual != (height, width):
                raise UserError(
                    f'{xml}: <size> says {height}x{width} but {image} is '
                    f'{actual[0]}x{actual[1]} (height x width)'
                )
        objects = []
        for k, o in enumerate(parsed['objects']):
            where = f'{xml}: object {k} ({o["name"]!r})'
            if o['name'] not in index:
                known = ', '.join(index)
                raise UserError(f'{where}: class {o["name"]!r} is not in the class list ({known})')
            x1, y1, x2, y2 = o['box']
            if self.coordinates == 'voc':
                x1, y1 = x1 - 1, y1 - 1
            if x1 > x2 or y1 > y2:
                raise UserError(f'{where}: xmin > xmax or ymin > ymax in {o["box"]}')
            if height is not None and (x1 < 0 or y1 < 0 or x2 > width or y2 > height):
                raise UserError(
                    f'{where}: box {o["box"]} reaches outside the {height}x{width} image '
                    f'(coordinates={self.coordinates!r})'
                )
            objects.append(([x1, y1, x2, y2], index[o['name']], o['difficult']))
        return make_record(image_id, image, key, height, width, objects)


def _flat_folder(folder: Path) -> list:
    """[(image, its same-stem xml or None, key)] of a flat folder, sorted."""
    if not folder.is_dir():
        raise MissingFile(f'voc_folder: no such folder {folder}')
    out = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES):
        xml = image.with_suffix('.xml')
        out.append((image, xml if xml.is_file() else None, None))  # key: relative_keys
    orphans = sorted(
        x.name for x in folder.glob('*.xml') if not any(x.stem == i.stem for i, _, _ in out)
    )
    if orphans:
        raise MissingFile(f'voc_folder: {folder}: annotations without an image: {orphans[:10]}')
    return out


def _parse(xml: Path, image) -> dict:
    """{'filename', 'size': (h, w) or None, 'objects': [{'name', 'box', 'difficult'}]}."""
    try:
        root = ET.parse(xml).getroot()
    except FileNotFoundError:
        raise MissingFile(f'voc_folder: annotation file {xml} is missing') from None
    except ET.ParseError as e:
        raise UserError(f'{xml}: malformed XML ({e})') from None
    filename = (root.findtext('filename') or '').strip() or (image.name if image else '')
    if not filename:
        raise UserError(f'{xml}: no <filename>')
    size = root.find('size')
    hw = None
    if size is not None:
        hw = (_number(xml, size, 'height', 'size'), _number(xml, size, 'width', 'size'))
        hw = (int(hw[0]), int(hw[1])) if hw[0] > 0 and hw[1] > 0 else None  # 0: unknown
    objects = []
    for k, o in enumerate(root.findall('object')):
        where = f'object {k}'
        name = (o.findtext('name') or '').strip()
        if not name:
            raise UserError(f'{xml}: {where} has no <name>')
        box = o.find('bndbox')
        if box is None:
            raise UserError(f'{xml}: {where} ({name!r}) has no <bndbox>')
        coords = [_number(xml, box, c, f'{where} ({name!r})') for c in COORDINATE_TAGS]
        difficult = (o.findtext('difficult') or '0').strip() in ('1', 'true', 'True')
        objects.append({'name': name, 'box': coords, 'difficult': difficult})
    return {'filename': filename, 'size': hw, 'objects': objects}


COORDINATE_TAGS = ('xmin', 'ymin', 'xmax', 'ymax')


def _number(xml: Path, parent, tag: str, where: str) -> float:
    text = parent.findtext(tag)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f'{xml}: {where}: <{tag}> is {text!r}, not a number') from None
    if value != value or value in (float('inf'), float('-inf')):
        raise UserError(f'{xml}: {where}: <{tag}> is {text!r}')
    return value
