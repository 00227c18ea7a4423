"""Look at the data as the model will see it, before training: pictures and a summary.

  python -m retinanet_jax show_data --config=configs/shapes.py --out=/tmp/shapes_data
  python -m retinanet_jax show_data --config=my_config.py --split=validation --out=DIR \
      [--num_images=16] [--max_images=10000] [--config.key=value ...]

Writes into --out:
  examples/NN.png   --num_images examples of the split as the model is fed them (the training
                    split: the first batch of that size in training's order, augmented, on
                    the canvas; the evaluation split: its first images, of the evaluated
                    dataset), ground-truth boxes and class names drawn
  examples.png      the same, as one grid
  summary.json      images, boxes, boxes per image, background-only images, crowd / difficult
                    boxes (evaluation only), boxes dropped by input.min_box_size or cut by
                    input.max_boxes (data/summary.py), from the ground truth of at most
                    --max_images images; training by crops (input.crop_size): counted over
                    windows drawn as training draws them
  sizes.png         the trained boxes' sizes against the anchors' sizes
and prints the summary. A box in the wrong convention (xywh read as xyxy, normalised read as
pixels) shows in the pictures before hours of training do.
"""

import json
from pathlib import Path

from absl import flags

TAKES_CONFIG = True


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        'out', None, 'the folder to write the pictures and summary into', flag_values=fv
    )
    flags.DEFINE_string(
        'split', None, "the split to show (default: the config's training split)", flag_values=fv
    )
    flags.DEFINE_integer('num_images', 16, 'examples to draw', flag_values=fv)
    flags.DEFINE_integer(
        'max_images', None, 'summarise at most this many images (default: all)', flag_values=fv
    )
    flags.mark_flags_as_required(['config', 'out'], flag_values=fv)


def main(f: flags.FlagValues) -> None:
    show_data(f.config, f.out, f.split, f.num_images, f.max_images)


def show_data(config, out, split=None, num_images: int = 16, max_images=None) -> dict:
    """Writes the pictures and summary of `config`'s data into `out` (module docstring);
    returns the summary (without the sizes)."""
    from PIL import Image

    from retinanet_jax import settings as settings_lib
    from retinanet_jax import visualize
    from retinanet_jax.data import pipeline, summary
    from retinanet_jax.errors import UserError

    if num_images < 1:
        raise UserError(f'num_images must be >= 1, got {num_images}')
    if max_images is not None and max_images < 1:
        raise UserError(f'max_images must be >= 1, got {max_images}')
    settings = settings_lib.from_config(config)
    train_source, evaluated = settings_lib.make_sources(settings)
    split = split or settings.data.train_split
    source = evaluated if split == settings.data.eval_split else train_source
    if split == settings.data.train_split:
        batch = pipeline.train_dataset(source, settings.input, num_images, split=split)[0]
    else:
        batch = pipeline.eval_dataset(source, settings.input, num_images, split=split)[0][0]
    out = Path(out)
    (out / 'examples').mkdir(parents=True, exist_ok=True)
    pictures = visualize.draw_batch(batch, source.label_map.names)
    for k, picture in enumerate(pictures):
        picture.save(out / 'examples' / f'{k:02d}.png')
    visualize.grid(pictures).save(out / 'examples.png')
    train = split == settings.data.train_split
    figures = summary.summarize(source, split, settings.input, max_images, train=train)
    sizes = sorted(s * k for s in settings.anchors.sizes for k in settings.anchors.scales)
    Image.fromarray(summary.size_histogram(figures, sizes)).save(out / 'sizes.png')
    figures = {k: v for k, v in figures.items() if k != 'box_sizes'}
    (out / 'summary.json').write_text(json.dumps(figures, indent=1))
    for key, value in figures.items():
        print(f'{key:>22}: {value}')
    print(f'wrote {len(pictures)} examples, examples.png, sizes.png and summary.json to {out}')
    return figures
