"""Why a model misses: a confusion matrix, PR curves, a TIDE error breakdown per class and the
worst images drawn, written into --out (retinanet_jax/analysis.py has the files).

  python -m retinanet_jax.commands.analyze --model=/tmp/shapes --out=/tmp/shapes/analysis
  python -m retinanet_jax.commands.analyze --model=/tmp/shapes:best --split=validation --out=DIR \
      [--score_threshold=0.3] [--iou=0.5] [--worst=16]
  python -m retinanet_jax.commands.analyze --model=retinanet_resnet50_fpn_coco.pth \
      --dataset=coco/2017 --split=validation --out=DIR

--model is anything `evaluate` takes (a training run, RUN:best, a model directory, a
torchvision state dict with --dataset); its metrics are `evaluate`'s, written to
DIR/metrics.json beside the analysis.
"""

from absl import app, flags

from retinanet_jax.commands import cli
from retinanet_jax.evaluation import analysis


def main(argv) -> None:
    del argv
    cli.start()
    f = flags.FLAGS
    cli.exit_on_bad_input(
        'analyze',
        analysis.analyze_run,
        f.model,
        f.split,
        out=f.out,
        score_threshold=f.score_threshold,
        iou=f.iou,
        worst=f.worst,
        **cli.split_options('analyze'),
        **cli.model_options(),
    )


if __name__ == '__main__':
    cli.define_model_flags()
    cli.define_cache_flag()
    cli.define_split_flags()
    flags.DEFINE_string('out', None, 'the folder to write the analysis into')
    flags.DEFINE_float('score_threshold', 0.3, 'confusion matrix and worst images: min score')
    flags.DEFINE_float('iou', 0.5, 'confusion matrix: IoU of a match')
    flags.DEFINE_integer('worst', 16, 'how many of the images with the most errors to draw')
    flags.mark_flags_as_required(['model', 'out'])
    app.run(main)
