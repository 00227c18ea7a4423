"""FileSource: what every source of labelled image files shares (coco_folder, voc_folder,
yolo_folder, csv): records of image files with their objects, read, checked and split.

A subclass reads its annotation files into records, one per image, and this class does the
rest: the image files' existence and (verify_images) readability, random access with the
decoded size checked against the annotations', ground truth without decoding, the files of a
batch for messages, and a deterministic split by fraction where the data come as one set.

A record: {'id': int, 'file': Path, 'key': str (the file relative to the dataset's folder:
what a split by fraction hashes), 'height', 'width' (from the annotations, or None: read from
the file's header), 'boxes' float32 [k, 4] xyxy pixels of the stored image, 'labels' int32 [k]
contiguous, 'is_crowd' bool [k] (kept for evaluation, never training targets: COCO crowds, VOC
'difficult'), 'area' float32 [k]}. An image with no objects has k = 0: it trains (every anchor
a negative) and evaluates like any other.

split_records(records, fractions): {split: records}, each image in the split that a hash of
its key picks (sha256 -> [0, 1), cut at the cumulative fractions of the sorted split names),
whatever the order or number of the other files.
"""

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from retinanet_jax.data import images
from retinanet_jax.data.source import Source
from retinanet_jax.errors import MissingFile, UserError


class FileSource(Source):
    """A source of image files: subclasses set `label_map`, `name`, `exif` and either read every
    split at once and hand the records to `set_splits`, or implement `split_records(split)`
    (the split's records, in order) themselves."""

    exif: str = 'ignore'
    verify_images: bool = True
    aliases: ClassVar[dict] = {}  # another name a split is reached by: {'validation': 'val'}

    def set_splits(self, records: dict[str, list[dict]], fractions: dict | None) -> None:
        """The splits: {split: records}, their files checked (check_files); with `fractions`
        (split -> fraction) every record pooled and split by its key's hash instead."""
        self._splits = {
            split: check_files(f'{self.name} {split}', r, self.verify_images, None, self.name)
            for split, r in records.items()
        }
        if fractions is not None:
            fractions = check_fractions(fractions, self.name)
            pooled = {r['key']: r for s in self._splits.values() for r in s}
            self._splits = split_records([pooled[k] for k in sorted(pooled)], fractions)

    def split_records(self, split: str) -> list[dict]:
        if split not in self._splits and self.aliases.get(split) in self._splits:
            split = self.aliases[split]
        if split not in self._splits:
            raise UserError(f'{self.name}: no split {split!r}; known: {sorted(self._splits)}')
        return self._splits[split]

    def num_examples(self, split: str) -> int:
        return len(self.split_records(split))

    def example(self, split: str, index: int) -> dict:
        r = self.split_records(split)[index]
        image = images.read_image(r['file'], self.exif)
        if r['height'] is not None and image.shape[:2] != (r['height'], r['width']):
            raise UserError(
                f'{r["file"]}: decodes to {image.shape[0]}x{image.shape[1]} but its annotations '
                f'say {r["height"]}x{r["width"]} (EXIF rotation? see the exif option)'
            )
        return {
            'image': image,
            'image_id': np.int64(r['id']),
            'boxes': r['boxes'],
            'labels': r['labels'],
            'is_crowd': r['is_crowd'],
        }

    def background_images(self, split: str) -> int:
        return sum(len(r['boxes']) == 0 for r in self.split_records(split))

    def image_files(self, split: str, image_ids) -> list[str]:
        files = {int(r['id']): str(r['file']) for r in self.split_records(split)}
        return [files[int(i)] for i in image_ids if int(i) in files]

    def ground_truth(self, split: str) -> Iterator[dict]:  # no image decoded
        for r in self.split_records(split):
            h, w = r['height'], r['width']
            if h is None:
                h, w = images.image_size(r['file'], self.exif)
            yield {
                'image_id': r['id'],
                'height': h,
                'width': w,
                'boxes': r['boxes'],
                'labels': r['labels'],
                'is_crowd': r['is_crowd'],
                'area': r['area'],
            }


def per_split(value, fractions, name: str, what: str) -> dict:
    """{split: value}: `value` as given where it maps splits to files or folders; one file or
    folder (a str or Path) is the whole set, {'all': value}, and needs `fractions` to split."""
    if isinstance(value, str | Path):
        if fractions is None:
            raise UserError(f'{name}: one {what} needs split_fractions (or give one per split)')
        return {'all': value}
    if not isinstance(value, dict) or not value:
        raise UserError(f'{name}: give a {what} per split (split -> {what}), got {value!r}')
    return value


def make_record(image_id: int, file: Path, key: str, height, width, objects: list) -> dict:
    """A record from `objects`: (xyxy box, label, is_crowd) or (box, label, is_crowd, area)."""
    boxes = np.asarray([o[0] for o in objects], np.float32).reshape(-1, 4)
    areas = [o[3] if len(o) > 3 else (o[0][2] - o[0][0]) * (o[0][3] - o[0][1]) for o in objects]
    return {
        'id': image_id,
        'file': file,
        'key': key,
        'height': height,
        'width': width,
        'boxes': boxes,
        'labels': np.asarray([o[1] for o in objects], np.int32),
        'is_crowd': np.asarray([o[2] for o in objects], bool),
        'area': np.asarray(areas, np.float32),
    }


def check_files(
    where, records: list[dict], verify_images: bool, skip_bad_images: bool | None, name: str
) -> list[dict]:
    """`records` whose image files exist (else MissingFile naming them) and, with
    `verify_images`, pass PIL's structural check (else UserError, or with `skip_bad_images`
    left out with a warning naming each)."""
    if not records:
        raise UserError(f'{where}: the split holds no image')
    missing = [str(r['file']) for r in records if not r['file'].is_file()]
    if missing:
        raise MissingFile(f'{where}: {len(missing)} image file(s) missing: {missing[:10]}')
    if not verify_images:
        return records
    bad = {}
    for r in records:
        reason = images.verify_image(r['file'])
        if reason is not None:
            bad[r['id']] = f'{r["file"]} ({reason})'
    if bad and not skip_bad_images:  # None: the source has no such option
        hint = ' (skip_bad_images=True leaves them out)' if skip_bad_images is False else ''
        raise UserError(
            f'{where}: {len(bad)} unreadable image file(s): {list(bad.values())[:10]}{hint}'
        )
    for what in bad.values():
        logging.warning('%s: %s: left out of the split: %s', name, where, what)
    return [r for r in records if r['id'] not in bad]


def check_fractions(fractions, name: str) -> dict[str, float]:
    """split -> fraction, each in (0, 1], summing to 1; UserError naming the option."""
    if not isinstance(fractions, dict) or not fractions:
        raise UserError(f'{name}: split_fractions must map split -> fraction, got {fractions!r}')
    for split, f in fractions.items():
        if not isinstance(f, int | float) or not 0 < f <= 1:
            raise UserError(f'{name}: split_fractions[{split!r}] must be in (0, 1], got {f!r}')
    if abs(sum(fractions.values()) - 1) > 1e-6:
        raise UserError(
            f'{name}: split_fractions must sum to 1 (no image left out), got '
            f'{sum(fractions.values())}'
        )
    return {str(k): float(v) for k, v in fractions.items()}


def relative_keys(files: list[Path]) -> dict[Path, str]:
    """Each file's path relative to the folder that holds them all: its key (unique, and the
    same wherever the dataset is moved)."""
    resolved = [f.resolve() for f in files]
    parents = {str(f.parent) for f in resolved}
    common = Path(os.path.commonpath(sorted(parents))) if parents else Path()
    if len(parents) == 1:
        common = common.parent
    return {f: str(r.relative_to(common)) for f, r in zip(files, resolved, strict=True)}


def split_of(key: str, fractions: dict[str, float]) -> str:
    """The split that `key` (a file's path in the dataset) falls in: sha256(key) -> u in [0, 1),
    the first of the sorted splits whose cumulative fraction exceeds u."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], 'big') / 2.0**64
    total = 0.0
    names = sorted(fractions)
    for split in names:
        total += fractions[split]
        if u < total:
            return split
    return names[-1]


def split_records(records: list[dict], fractions: dict[str, float]) -> dict[str, list[dict]]:
    """{split: its records, in the order given} (split_of each record's key)."""
    out = {split: [] for split in fractions}
    for r in records:
        out[split_of(r['key'], fractions)].append(r)
    empty = [split for split, kept in out.items() if not kept]
    if empty:
        raise UserError(
            f'split_fractions {fractions} leave {empty} without an image (of {len(records)}): '
            'give it a larger fraction, or more images'
        )
    return out
