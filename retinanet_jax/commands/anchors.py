"""Anchor coverage of a config's training data, and anchors that cover it better.

  python -m retinanet_jax anchors --config=configs/shapes.py
  python -m retinanet_jax anchors --config=configs/coco.py --max_images=5000 \
      [--split=train] [--out=report.json] [--config.input.image_size='(1344,1344)' ...]

Prints, for the boxes of --split (default: the config's training split) at the evaluation
scale: the share whose best anchor reaches the matcher's positive / negative IoU threshold per
size range, the boxes only low-quality matching gives an anchor, and a proposed layout with as
many anchors per location, as lines to paste into the config (evaluation/anchor_fit.py has the
method). Nothing is compiled.
"""

import json

from absl import flags

TAKES_CONFIG = True


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        'split',
        None,
        "the split whose boxes count (default: the config's training)",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        'max_images', 10_000, 'read the ground truth of at most this many images', flag_values=fv
    )
    flags.DEFINE_string('out', None, 'also write the figures here as JSON', flag_values=fv)
    flags.mark_flags_as_required(['config'], flag_values=fv)


def main(f: flags.FlagValues) -> None:
    report(f.config, f.split, f.max_images, f.out)


def report(config, split: str | None, max_images: int, out: str | None) -> None:
    """Prints the anchor report of `config` (a ConfigDict) on `split`; `out`: also as JSON."""
    from retinanet_jax.errors import UserError

    if max_images < 1:
        raise UserError(f'max_images must be >= 1, got {max_images}')
    from retinanet_jax import settings as settings_lib
    from retinanet_jax.evaluation import anchor_fit

    result = anchor_fit.report(settings_lib.from_config(config), split, max_images)
    anchors = config.get('anchors')  # a preset name in a config of old, or a dict
    set_keys = (
        {k for k, v in anchors.items() if v is not None and k != 'preset'}
        if hasattr(anchors, 'items')
        else set()
    )
    print(anchor_fit.format_report(result, set_keys))
    if out:
        with open(out, 'w') as file:
            json.dump(anchor_fit.to_json(result), file, indent=1)
        print(f'wrote {out}')
