"""Detect objects in image files; write COCO-style JSON and pictures.

  python -m retinanet_jax.predict --model=/tmp/shapes --images=photos/ --out=/tmp/predictions

--model is a training run, a model directory or a torchvision state dict (see inference.py).
Writes <out>/detections.json (COCO results: file_name, category_id, bbox xywh in original
pixels, score) and <out>/<name>.png with boxes, class names and scores drawn. Unreadable files
are skipped with a warning naming them; the rest are still written.
"""

import json
import logging
from pathlib import Path

try:  # torch, where installed, must be imported before tensorflow
    import torch  # noqa: F401
except ImportError:
    pass

import numpy as np
from absl import app, flags
from PIL import Image, UnidentifiedImageError

from retinanet_jax import cli, visualize
from retinanet_jax.inference import Predictor, load_predictor

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


def image_files(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f'no such image file or folder: {p}')
    if not files:
        raise ValueError(f'no image files found in {paths}')
    return files


def predict_files(
    predictor: Predictor, paths: list[str], out: Path, min_score: float = 0.3
) -> list[dict]:
    p = predictor
    names, category_ids = p.label_map.names, p.label_map.category_ids
    files = image_files(paths)
    out.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    for path in files:
        try:
            with Image.open(path) as f:
                image = np.asarray(f.convert('RGB'))
        except (UnidentifiedImageError, OSError) as e:
            logging.warning('skipping %s: not a readable image (%s)', path, e)
            skipped.append(str(path))
            continue
        dets = p.predict_image(image)
        keep = dets['valid']
        boxes, scores, labels = dets['boxes'][keep], dets['scores'][keep], dets['labels'][keep]
        shown = scores >= min_score
        picture = visualize.draw_boxes(image, boxes[shown], labels[shown], names, scores[shown])
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


def main(argv) -> None:
    del argv
    cli.start()
    f = flags.FLAGS
    predictor = cli.exit_on_bad_input('predict', load_predictor, f.model, **cli.model_options())
    cli.exit_on_bad_input('predict', predict_files, predictor, f.images, Path(f.out), f.min_score)


if __name__ == '__main__':
    cli.define_model_flags()
    cli.define_cache_flag()
    flags.DEFINE_list('images', None, 'image files and / or folders')
    flags.DEFINE_string('out', None, 'output folder for detections.json and pictures')
    flags.DEFINE_float('min_score', 0.3, 'draw detections from this score (the JSON has all)')
    flags.mark_flags_as_required(['model', 'images', 'out'])
    app.run(main)
