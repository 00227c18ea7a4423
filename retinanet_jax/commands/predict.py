"""Detect objects in image files; write COCO-style JSON and pictures.

  python -m retinanet_jax predict --model=/tmp/shapes --images=photos/ --out=/tmp/predictions

--model is a training run (RUN or RUN:best), a model directory or a torchvision state dict
(inference/model_path.py). Writes <out>/detections.json (COCO results: file_name, category_id,
bbox xywh in original pixels, score) and <out>/<name>.png with boxes, class names and scores
drawn (from --min_score). Any image file kind is read as RGB (data/images.py: grayscale,
palette, RGBA, 16-bit, CMYK); JPEGs are turned upright by their EXIF orientation first
(--exif=apply, the default: boxes refer to the picture as a viewer shows it; --exif=ignore: to
the stored pixels). Unreadable files are skipped with a warning naming them; the rest are
still written.

Large images with small objects: --tile_size=512 cuts each image into overlapping 512-pixel
windows (--tile_overlap, 0.2) that run at the model's scale in batches of --tile_batch (the
windows of small images share batches), and merges their detections so that one object gives
one detection (inference/tiling.py):

  python -m retinanet_jax predict --model=/runs/aerial --images=site.tif --out=/tmp/site \
      --tile_size=512 --tile_overlap=0.2

With --tile_size a TIFF (.tif, .tiff) is read window by window (data/rasters.py: tifffile and
zarr, optional), so a raster larger than memory runs in memory bounded by the tile batch; its
picture is drawn on an overview of at most 4,096 pixels a side. Other files are read whole.
"""

import functools
import itertools
import json
import logging
from pathlib import Path

from absl import flags

from retinanet_jax import visualize
from retinanet_jax.commands import command
from retinanet_jax.data import images, rasters
from retinanet_jax.errors import MissingFile, UserError
from retinanet_jax.inference import tiling
from retinanet_jax.inference.loading import load_predictor
from retinanet_jax.inference.predictor import Predictor

IMAGE_SUFFIXES = (*images.IMAGE_SUFFIXES, '.gif')
PICTURE_SIDE = 4096  # the long side of a raster's picture (drawn on an overview)


def define_flags(fv: flags.FlagValues) -> None:
    command.define_model_flags(fv)
    command.define_cache_flag(fv)
    flags.DEFINE_list('images', None, 'image files and / or folders', flag_values=fv)
    flags.DEFINE_string(
        'out', None, 'output folder for detections.json and pictures', flag_values=fv
    )
    flags.DEFINE_float(
        'min_score', 0.3, 'draw detections from this score (the JSON has all)', flag_values=fv
    )
    flags.DEFINE_enum(
        'exif',
        'apply',
        ['apply', 'ignore'],
        'EXIF orientation: apply it (upright) or ignore it',
        flag_values=fv,
    )
    command.define_tile_flags(fv)
    flags.mark_flags_as_required(['model', 'images', 'out'], flag_values=fv)


def main(f: flags.FlagValues) -> None:
    predictor = load_predictor(f.model, **command.model_options(f))
    tiles = command.tile_options(f)
    predict_files(predictor, f.images, Path(f.out), f.min_score, f.exif, tiles)


def image_files(paths: list[str]) -> list[Path]:
    """The image files of `paths`: files as given, folders' images (by suffix) sorted."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            raise MissingFile(f'no such image file or folder: {p}')
    if not files:
        raise UserError(f'no image files found in {paths}')
    return files


def predict_files(
    predictor: Predictor,
    paths: list[str],
    out: Path,
    min_score: float = 0.3,
    exif: str = 'apply',
    tiles: tiling.TileConfig | None = None,
) -> list[dict]:
    """Detections of every image file under `paths` (see the module docstring); `exif`: see
    data/images.py ('apply': boxes refer to the upright picture a viewer shows); `tiles`:
    sliced inference, each image cut into overlapping windows at the model's scale."""
    files = image_files(paths)
    if tiles is not None:  # a missing raster reader stops the command, not one file
        for path in filter(rasters.is_raster, files):
            rasters.require(path)
    p = predictor
    names, category_ids = p.label_map.names, p.label_map.category_ids
    out.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    for path, found in _detections(p, files, exif, tiles):
        if isinstance(found, ValueError):
            logging.warning('skipping %s', found)
            skipped.append(str(path))
            continue
        (boxes, scores, labels), (image, factor) = found
        shown = scores >= min_score
        drawn = boxes[shown] * factor
        picture = visualize.draw_boxes(image, drawn, labels[shown], names, scores[shown])
        picture.save(out / f'{path.stem}.png')
        for box, score, label in zip(boxes, scores, labels, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    'file_name': path.name,
                    'category_id': int(category_ids[label]),
                    'bbox': [x1, y1, x2 - x1, y2 - y1],
                    'score': float(score),
                }
            )
    (out / 'detections.json').write_text(json.dumps(results, indent=1))
    note = f'; skipped {len(skipped)} unreadable: {skipped}' if skipped else ''
    print(
        f'{p.description}: {len(results)} detections in {len(files) - len(skipped)} '
        f'image(s) -> {out}{note}'
    )
    return results


def _detections(predictor: Predictor, files: list[Path], exif: str, tiles):
    """(path, ((boxes, scores, labels) of its valid detections, (the picture to draw them on,
    its scale))) for each file, or (path, the ValueError that reading it raised). With `tiles`,
    images share batches of windows (tiling.image_groups), and a raster runs alone, read by
    windows and drawn on its overview. Unreadable files come before the group they were read
    with; the others come in order."""

    def raster(path):
        with rasters.open_raster(path) as r:
            dets = tiling.predict_tiled(predictor, [r], tiles)[0]
            return _valid(dets), rasters.overview(r, PICTURE_SIDE)

    def readable(paths, errors):
        for path in paths:
            try:
                yield path, images.read_image(path, exif)
            except ValueError as e:
                errors.append((path, e))

    by_kind = itertools.groupby(files, lambda f: tiles is not None and rasters.is_raster(f))
    for is_raster, run in by_kind:
        if is_raster:
            for path in run:
                try:
                    yield path, raster(path)
                except ValueError as e:
                    yield path, e
            continue
        errors = []
        loaded = readable(run, errors)
        if tiles is None:
            groups, predict = ([item] for item in loaded), predictor.predict_images
        else:
            groups = tiling.image_groups(predictor, loaded, tiles, lambda item: item[1])
            predict = functools.partial(tiling.predict_tiled, predictor, tiles=tiles)
        for group in groups:
            yield from errors
            errors.clear()
            found = predict([image for _, image in group])
            for (path, image), dets in zip(group, found, strict=True):
                yield path, (_valid(dets), (image, 1.0))
        yield from errors


def _valid(dets: dict):
    keep = dets['valid']
    return dets['boxes'][keep], dets['scores'][keep], dets['labels'][keep]
