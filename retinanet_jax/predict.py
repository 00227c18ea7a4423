"""Detect objects in image files with a trained model; write COCO-style JSON and pictures.

  python -m retinanet_jax.predict --workdir=/tmp/shapes --images=photos/ --out=/tmp/predictions

Reads the run's config.json and its latest checkpoint; each image is resized and padded as in
evaluation. Writes <out>/detections.json (COCO results: file_name, category_id, bbox xywh in
original pixels, score) and <out>/<name>.png with boxes, class names and scores drawn.
Unreadable files are skipped with a warning naming them; the rest are still written.
"""

import json
import logging
from pathlib import Path

try:  # torch, where installed, must be imported before tensorflow
    import torch  # noqa: F401
except ImportError:
    pass

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags
from absl import logging as absl_logging
from PIL import Image, UnidentifiedImageError

from retinanet_jax import sharding, train_lib, visualize

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


def load_run(workdir: Path):
    """(config, graphdef, state) of the latest checkpoint of a training run."""
    config_file = workdir / 'config.json'
    if not config_file.is_file():
        raise FileNotFoundError(f'{workdir} is not a training run (no config.json)')
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    mesh = sharding.make_mesh()
    graphdef, state = train_lib.create_state(config, mesh)
    with ocp.CheckpointManager(workdir / 'checkpoints') as manager:
        restored, step = train_lib._restore(manager, state, workdir)
    if restored is None:
        raise FileNotFoundError(f'{workdir}/checkpoints holds no checkpoint')
    return config, graphdef, restored, step, mesh


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


def predict_files(workdir: Path, paths: list[str], out: Path, min_score: float = 0.3) -> list[dict]:
    import tensorflow as tf

    config, graphdef, state, step, mesh = load_run(workdir)
    source, input_config, pipeline = train_lib._data(config)
    predict = train_lib.make_predict_step(graphdef, tuple(input_config.image_size), config, mesh)
    names, category_ids = source.label_map.names, source.label_map.category_ids
    out.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    files = image_files(paths)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as f:
                image = np.asarray(f.convert('RGB'))
        except (UnidentifiedImageError, OSError) as e:
            logging.warning('skipping %s: not a readable image (%s)', path, e)
            skipped.append(str(path))
            continue
        raw = {
            'image': tf.constant(image),
            'image_id': tf.constant(i, tf.int64),
            'boxes': tf.zeros([0, 4]),
            'labels': tf.zeros([0], tf.int32),
            'is_crowd': tf.zeros([0], tf.bool),
        }
        example = pipeline.preprocess(raw, input_config, train=False)
        batch = {k: np.asarray(v)[None] for k, v in example.items()}
        batch = {k: np.repeat(v, jax.device_count(), axis=0) for k, v in batch.items()}
        dets = sharding.to_local(predict(state, sharding.to_global(batch, mesh)), mesh)
        keep = dets['valid'][0]
        boxes, scores, labels = (
            dets['boxes'][0][keep],
            dets['scores'][0][keep],
            dets['labels'][0][keep],
        )
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
        f'checkpoint step {step}: {len(results)} detections in {len(files) - len(skipped)} '
        f'image(s) -> {out}{note}'
    )
    return results


def main(argv) -> None:
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every step at INFO
    f = flags.FLAGS
    predict_files(Path(f.workdir), f.images, Path(f.out), f.min_score)


if __name__ == '__main__':
    flags.DEFINE_string('workdir', None, 'a training run directory (config.json + checkpoints)')
    flags.DEFINE_list('images', None, 'image files and / or folders')
    flags.DEFINE_string('out', None, 'output folder for detections.json and pictures')
    flags.DEFINE_float('min_score', 0.3, 'draw detections from this score (the JSON has all)')
    flags.mark_flags_as_required(['workdir', 'images', 'out'])
    app.run(main)
