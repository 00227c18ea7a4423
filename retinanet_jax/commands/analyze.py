"""Why a model misses: confusion matrix, PR curves, TIDE errors and the worst images, as files.

  python -m retinanet_jax analyze --model=/tmp/shapes --out=/tmp/shapes/analysis
  python -m retinanet_jax analyze --model=/tmp/shapes:best --split=validation --out=DIR \
      [--score_threshold=0.3] [--iou=0.5] [--worst=16]
  python -m retinanet_jax analyze --model=retinanet_resnet50_fpn_coco.pth \
      --dataset=coco/2017 --split=validation --out=DIR

--model is anything `evaluate` takes (a training run, RUN:best, a model directory, a
torchvision state dict with --dataset); its metrics are `evaluate`'s, written to
DIR/metrics.json beside the analysis (evaluation/analysis.py lists the files).
"""

from absl import flags

from retinanet_jax.commands import command
from retinanet_jax.evaluation import analysis, split_evaluation


def define_flags(fv: flags.FlagValues) -> None:
    command.define_model_flags(fv)
    command.define_cache_flag(fv)
    command.define_split_flags(fv)
    flags.DEFINE_string('out', None, 'the folder to write the analysis into', flag_values=fv)
    flags.DEFINE_float(
        'score_threshold', 0.3, 'confusion matrix and worst images: min score', flag_values=fv
    )
    flags.DEFINE_float('iou', 0.5, 'confusion matrix: IoU of a match', flag_values=fv)
    flags.DEFINE_integer(
        'worst', 16, 'how many of the images with the most errors to draw', flag_values=fv
    )
    command.define_tile_flags(fv)
    flags.mark_flags_as_required(['model', 'out'], flag_values=fv)


def main(f: flags.FlagValues) -> None:
    analysis.analyze_run(
        f.model,
        f.split,
        out=f.out,
        score_threshold=f.score_threshold,
        iou=f.iou,
        worst=f.worst,
        tiles=command.tile_options(f, unset=split_evaluation.RUN_TILES),
        **command.split_options(f),
        **command.model_options(f),
    )
