"""Detect objects in image files; write COCO-style JSON and pictures.

  python -m retinanet_jax.commands.predict --model=/tmp/shapes --images=photos/ \
      --out=/tmp/predictions

--model is a training run, a model directory or a torchvision state dict (see inference.py).
Writes <out>/detections.json (COCO results: file_name, category_id, bbox xywh in original
pixels, score) and <out>/<name>.png with boxes, class names and scores drawn (from
--min_score). Any image file kind is read as RGB (data/images.py: grayscale, palette, RGBA,
16-bit, CMYK); JPEGs are turned upright by their EXIF orientation first (--exif=apply, the
default: boxes refer to the picture as a viewer shows it; --exif=ignore: to the stored
pixels). Unreadable files are skipped with a warning naming them; the rest are still written.
"""

from pathlib import Path

from absl import app, flags

from retinanet_jax.commands import cli
from retinanet_jax.inference import predictor as inference


def main(argv) -> None:
    del argv
    cli.start()
    f = flags.FLAGS
    predictor = cli.exit_on_bad_input(
        'predict', inference.load_predictor, f.model, **cli.model_options()
    )
    cli.exit_on_bad_input(
        'predict', inference.predict_files, predictor, f.images, Path(f.out), f.min_score, f.exif
    )


if __name__ == '__main__':
    cli.define_model_flags()
    cli.define_cache_flag()
    flags.DEFINE_list('images', None, 'image files and / or folders')
    flags.DEFINE_string('out', None, 'output folder for detections.json and pictures')
    flags.DEFINE_float('min_score', 0.3, 'draw detections from this score (the JSON has all)')
    flags.DEFINE_enum(
        'exif', 'apply', ['apply', 'ignore'], 'EXIF orientation: apply it (upright) or ignore it'
    )
    flags.mark_flags_as_required(['model', 'images', 'out'])
    app.run(main)
