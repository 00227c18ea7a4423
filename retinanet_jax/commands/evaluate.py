"""Evaluate a model on a dataset split: the 12 COCO stats as a table and as JSON.

  python -m retinanet_jax.commands.evaluate --model=/tmp/shapes [--split=validation]
  python -m retinanet_jax.commands.evaluate --model=retinanet_resnet50_fpn_coco.pth \
      --dataset=coco/2017 --split=validation [--dataset_options='{"data_dir": "..."}'] \
      [--out=eval.json]

--model is a training run directory (its latest checkpoint on its own dataset; a workdir whose
checkpoints do not match its config is refused with a reason), a model directory from
`python -m retinanet_jax.commands.convert`, or a torchvision state dict file (see
inference.py; these need --dataset). Every image of the split is evaluated once (progress
bar); the metrics are printed and written to --out (default for a training run:
<workdir>/eval_<split>.json).
"""

from absl import app, flags

from retinanet_jax.commands import cli
from retinanet_jax.evaluation import split_evaluation as evaluation


def main(argv) -> None:
    del argv
    cli.start()
    f = flags.FLAGS
    cli.exit_on_bad_input(
        'evaluate',
        evaluation.evaluate_run,
        f.model,
        f.split,
        **cli.split_options('evaluate'),
        out=f.out,
        **cli.model_options(),
    )


if __name__ == '__main__':
    cli.define_model_flags()
    cli.define_cache_flag()
    cli.define_split_flags()
    flags.DEFINE_string('out', None, 'write the metrics here as JSON')
    flags.mark_flags_as_required(['model'])
    app.run(main)
