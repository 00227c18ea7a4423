"""Detect objects in image files; write COCO-style JSON and pictures.

  python -m retinanet_jax.predict --model=/tmp/shapes --images=photos/ --out=/tmp/predictions

--model is any of:
  a training run directory   (config.json + checkpoints/: its latest checkpoint, its input size,
                              anchors, post-processing and class names)
  a model directory          (model_config.json + state/, from `python -m retinanet_jax.convert`)
  a torchvision state dict   (retinanet_resnet50_fpn .pth / .safetensors / .npz; --variant v1/v2)
The last two are torchvision models: torchvision's anchors and resizing (short side
--short_side, long side at most --max_side) and class names by class count (91: torchvision's
COCO labels, which are COCO category ids), 100 detections per image (torchvision keeps 300;
COCO's AP counts the best 100 of each image, so its numbers are the same). Writes
<out>/detections.json (COCO results: file_name, category_id, bbox xywh in original pixels,
score) and <out>/<name>.png with boxes, class names and scores drawn. Unreadable files are
skipped with a warning naming them; the rest are still written.
"""

import dataclasses
import json
import logging
import math
import sys
from pathlib import Path

try:  # torch, where installed, must be imported before tensorflow
    import torch  # noqa: F401
except ImportError:
    pass

import jax
import ml_collections
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from PIL import Image, UnidentifiedImageError

from retinanet_jax import sharding, train_lib, visualize

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


def load_run(workdir: Path):
    """(config, model graphdef, model state, step, mesh) of a training run's latest checkpoint."""
    config_file = workdir / 'config.json'
    if not config_file.is_file():
        raise FileNotFoundError(f'{workdir} is not a training run (no config.json)')
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    mesh = sharding.make_mesh()
    _, state = train_lib.create_state(config, mesh)
    with train_lib._checkpoints(workdir) as manager:
        restored, step = train_lib._restore(manager, state, workdir)
    if restored is None:
        raise FileNotFoundError(f'{workdir}/checkpoints holds no checkpoint')
    return config, train_lib.model_graphdef(config), train_lib.model_state(restored), step, mesh


@dataclasses.dataclass
class Predictor:
    """A model ready to predict: `predict(state, batch)` from train_lib.make_predict_step."""

    predict: object
    state: object
    mesh: object
    input_config: object  # data.pipeline.InputConfig
    label_map: object  # data.label_maps.LabelMap
    config: ml_collections.ConfigDict  # a training run's config, or the torchvision settings
    description: str  # e.g. 'checkpoint step 700' or 'retinanet.pth'
    step: int | None = None  # a training run's checkpoint step
    eval_source: object = None  # a training run's evaluation source (data.sources.Source)


def load_predictor(
    model: str | Path, variant: str = 'v1', short_side: int = 800, max_side: int = 1333
) -> Predictor:
    """A Predictor from a training run, a model directory or a torchvision state dict file."""
    from flax import nnx

    from retinanet_jax import checkpoint, convert
    from retinanet_jax.data import label_maps, pipeline

    path = Path(model)
    if path.is_dir() and (path / 'config.json').is_file():
        config, graphdef, state, step, mesh = load_run(path)
        source, input_config, _ = train_lib._data(config)
        image_hw = tuple(input_config.image_size)
        predict = train_lib.make_predict_step(graphdef, image_hw, config, mesh)
        return Predictor(
            predict, state, mesh, input_config, source.label_map, config,
            f'checkpoint step {step}', step, train_lib.eval_source(config, source),
        )  # fmt: skip
    if path.is_dir() and (path / 'model_config.json').is_file():
        net, _ = checkpoint.load_model(path)
    elif path.is_file():
        net = convert.retinanet_from_torchvision(convert.load_state_dict(path), variant)
    else:
        raise FileNotFoundError(
            f'--model {path}: neither a training run (config.json), a model directory '
            '(model_config.json) nor a state dict file'
        )
    side = 128 * math.ceil(max_side / 128)  # a static canvas every resized image fits in
    input_config = pipeline.InputConfig(
        image_size=(side, side), short_side=short_side, max_side=max_side, flip=False
    )
    config = ml_collections.ConfigDict(
        {'anchors': 'torchvision', 'postprocess': {'max_detections': 100}}
    )
    mesh = sharding.make_mesh()
    graphdef, state = nnx.split(net)
    state = jax.device_put(state, sharding.replicated(mesh))
    predict = train_lib.make_predict_step(graphdef, (side, side), config, mesh)
    label_map = label_maps.for_num_classes(net.num_classes)
    return Predictor(predict, state, mesh, input_config, label_map, config, path.name)


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
    import tensorflow as tf

    from retinanet_jax.data import pipeline

    p = predictor
    names, category_ids = p.label_map.names, p.label_map.category_ids
    files = image_files(paths)
    out.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
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
        example = pipeline.preprocess(raw, p.input_config, train=False)
        batch = {k: np.asarray(v)[None] for k, v in example.items()}
        batch = {k: np.repeat(v, jax.device_count(), axis=0) for k, v in batch.items()}
        dets = sharding.to_local(p.predict(p.state, sharding.to_global(batch, p.mesh)), p.mesh)
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
        f'{p.description}: {len(results)} detections in {len(files) - len(skipped)} '
        f'image(s) -> {out}{note}'
    )
    return results


def define_model_flags() -> None:
    """--model and the settings of torchvision models (predict and evaluate share them)."""
    flags.DEFINE_string('model', None, 'a training run, a model directory or a state dict file')
    flags.DEFINE_enum('variant', 'v1', ['v1', 'v2'], 'torchvision state dicts: which model')
    flags.DEFINE_integer('short_side', 800, 'torchvision models: resize the short side to this')
    flags.DEFINE_integer('max_side', 1333, 'torchvision models: ... unless the long side exceeds')


def model_options() -> dict:
    """load_predictor's keyword arguments from the flags of define_model_flags."""
    f = flags.FLAGS
    return dict(variant=f.variant, short_side=f.short_side, max_side=f.max_side)


def main(argv) -> None:
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every step at INFO
    f = flags.FLAGS
    try:
        predictor = load_predictor(f.model, **model_options())
        predict_files(predictor, f.images, Path(f.out), f.min_score)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f'predict: {e}')


if __name__ == '__main__':
    define_model_flags()
    flags.DEFINE_list('images', None, 'image files and / or folders')
    flags.DEFINE_string('out', None, 'output folder for detections.json and pictures')
    flags.DEFINE_float('min_score', 0.3, 'draw detections from this score (the JSON has all)')
    flags.mark_flags_as_required(['model', 'images', 'out'])
    app.run(main)
