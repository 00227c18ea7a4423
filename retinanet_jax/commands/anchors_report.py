"""Anchor coverage of a config's training data, and anchors that cover it better
(retinanet_jax/anchor_fit.py has the method).

  python -m retinanet_jax.commands.anchors_report --config=configs/shapes.py
  python -m retinanet_jax.commands.anchors_report --config=configs/coco.py --max_images=5000 \
      [--split=train] [--out=report.json] [--config.input.image_size='(1344,1344)' ...]

Prints, for the boxes of --split (default: the config's training split) at the evaluation
scale: the share whose best anchor reaches the matcher's positive / negative IoU threshold per
size range, the boxes only low-quality matching gives an anchor, and a proposed layout with as
many anchors per location, as lines to paste into the config.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from retinanet_jax import settings as settings_lib
from retinanet_jax.commands import cli
from retinanet_jax.evaluation import anchor_fit


def run(config, split, max_images, out) -> None:
    settings = settings_lib.from_config(config)
    result = anchor_fit.report(settings, split, max_images)
    anchors = config.get('anchors')
    has_keys = set(anchors.keys()) if hasattr(anchors, 'keys') else set()
    print(anchor_fit.format_report(result, has_keys))
    if out:
        with open(out, 'w') as f:
            json.dump(anchor_fit.to_json(result), f, indent=1)
        print(f'wrote {out}')


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    f = flags.FLAGS  # (nothing is compiled: no compilation cache to set up)
    cli.exit_on_bad_input('anchors_report', run, f.config, f.split, f.max_images, f.out)


if __name__ == '__main__':
    config_flags.DEFINE_config_file('config', None, 'path to a configs/*.py file', lock_config=True)
    flags.DEFINE_string(
        'split', None, "the split whose boxes count (default: the config's training)"
    )
    flags.DEFINE_integer('max_images', 10_000, 'read the ground truth of at most this many images')
    flags.DEFINE_string('out', None, 'also write the figures here as JSON')
    flags.mark_flags_as_required(['config'])
    app.run(main, flags_parser=cli.config_flags_parser('anchors_report'))
