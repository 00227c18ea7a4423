"""Evaluate a model on a dataset split: COCO metrics, P / R / F1 and validation loss.

  python -m retinanet_jax evaluate --model=/tmp/shapes [--split=validation]
  python -m retinanet_jax evaluate --model=/tmp/shapes:best
  python -m retinanet_jax evaluate --model=retinanet_resnet50_fpn_coco.pth \
      --dataset=coco/2017 --split=validation [--dataset_options='{"data_dir": "..."}'] \
      [--out=eval.json]

--model is a training run directory (its newest checkpoint, or with :best its best, on its own
dataset; a workdir whose checkpoints do not match its config is refused with a reason), a model
directory from the convert command, or a torchvision state dict file (these need --dataset and
--split). Every image of the split is evaluated once (progress bar), as training evaluates: the
metrics (COCO's AP and AR, precision, recall and F1 at --pr_iou and --pr_score_threshold with
the best-F1 score threshold, the validation loss) are printed and written to --out (default
for a training run: <workdir>/eval_<split>.json).
"""

import json
from pathlib import Path

import jax
from absl import flags

from retinanet_jax.commands import command
from retinanet_jax.evaluation import coco_metrics, split_evaluation


def define_flags(fv: flags.FlagValues) -> None:
    command.define_model_flags(fv)
    command.define_cache_flag(fv)
    command.define_split_flags(fv)
    flags.DEFINE_string('out', None, 'write the metrics here as JSON', flag_values=fv)
    flags.DEFINE_float(
        'pr_iou',
        None,
        "precision / recall / F1: IoU of a hit (default: the run's, or 0.5)",
        flag_values=fv,
    )
    flags.DEFINE_float(
        'pr_score_threshold',
        None,
        "precision / recall / F1: the score a detection needs (default: the run's, or 0.3)",
        flag_values=fv,
    )
    command.define_tile_flags(fv)
    flags.mark_flags_as_required(['model'], flag_values=fv)


def main(f: flags.FlagValues) -> None:
    options = command.split_options(f) | command.model_options(f)
    options |= dict(pr_iou=f.pr_iou, pr_score_threshold=f.pr_score_threshold)
    tiles = command.tile_options(f, unset=split_evaluation.RUN_TILES)
    evaluate_run(f.model, f.split, out=f.out, tiles=tiles, **options)


def evaluate_run(
    model: str | Path,
    split: str | None = None,
    *,
    out=None,
    tiles=split_evaluation.RUN_TILES,
    **options,
) -> dict:
    """The metrics of `model` on a split (split_evaluation.prepare's arguments), printed as a
    table and written as JSON to `out` (a training run: <workdir>/eval_<split>.json by
    default); `tiles` (inference.tiling.TileConfig): by sliced inference (default: as the run's
    config.evaluation says; None: whole images; split_evaluation.Prepared.run)."""
    evaluation = split_evaluation.prepare(model, split, **options)
    metrics = evaluation.run(tiles)
    result = {
        'model': str(model),
        'step': evaluation.predictor.step,
        'dataset': evaluation.dataset,
        'split': evaluation.split,
        **metrics,
    }
    out = out or evaluation.default_out
    if jax.process_index() == 0:
        print(f'{evaluation.predictor.description} on {evaluation.dataset} {evaluation.split}:')
        print(coco_metrics.format_table(metrics))
        if out is not None:
            Path(out).write_text(json.dumps(result, indent=1))
            print(f'wrote {out}')
    return result
