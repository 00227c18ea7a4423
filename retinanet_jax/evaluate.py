"""Evaluate a model on a dataset split: the 12 COCO stats as a table and as JSON.

  python -m retinanet_jax.evaluate --model=/tmp/shapes [--split=validation]
  python -m retinanet_jax.evaluate --model=retinanet_resnet50_fpn_coco.pth \
      --dataset=coco/2017 --split=validation [--dataset_options='{"data_dir": "..."}'] \
      [--out=eval.json]

--model is a training run directory (its latest checkpoint on its own dataset; a workdir whose
checkpoints do not match its config is refused with a reason), a model directory from
`python -m retinanet_jax.convert`, or a torchvision state dict file (see inference.py; these
need --dataset). Every image of the split is evaluated once (progress bar); the metrics are
printed and written to --out (default for a training run: <workdir>/eval_<split>.json).
"""

import json
import sys
from pathlib import Path

import jax
from absl import app, flags

from retinanet_jax import cli, evaluation, inference, sharding


def evaluate_run(
    model: str | Path,
    split: str | None = None,
    *,
    dataset: str | None = None,
    dataset_options: dict | None = None,
    batch_size: int | None = None,
    out: str | Path | None = None,
    **predictor_options,
) -> dict:
    from tqdm import tqdm

    model = Path(model)
    run = (model / 'config.json').is_file()
    if not run and (dataset is None or split is None):
        raise ValueError(f'--model {model} is not a training run: give --dataset and --split')
    p = inference.load_predictor(model, **predictor_options)  # a .pth: torch before tensorflow
    from retinanet_jax.data import pipeline, sources

    if run and dataset is None:  # the run's own evaluation data
        source = p.sources[1]
        split = split or p.settings.data.eval_split
        batch_size = batch_size or p.settings.batch_size
        name = p.settings.data.evaluated
        out = out or model / f'eval_{split}.json'
    else:
        source, name = sources.make_source(dataset, **(dataset_options or {})), dataset
        batch_size = batch_size or jax.device_count()
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    local_batch = sharding.local_batch_size(batch_size)
    eval_ds, num_batches = pipeline.eval_dataset(
        source, p.input, local_batch, split=split, **process
    )
    detection_labels = None if p.label_map == source.label_map else p.label_map
    config = p.settings.evaluation if p.settings else evaluation.EvaluationConfig()
    evaluator = evaluation.make_evaluator(source, split, detection_labels, config)
    batches = pipeline.eval_batches(eval_ds)
    metrics = inference.evaluate(p.predict, p.state, batches, num_batches, evaluator, p.mesh, tqdm)
    result = {'model': str(model), 'step': p.step, 'dataset': name, 'split': split, **metrics}
    if jax.process_index() == 0:
        print(f'{p.description} on {name} {split}:')
        print(evaluation.format_table(metrics))
        if out is not None:
            Path(out).write_text(json.dumps(result, indent=1))
            print(f'wrote {out}')
    return result


def main(argv) -> None:
    del argv
    cli.start()
    f = flags.FLAGS
    try:
        options = json.loads(f.dataset_options) if f.dataset_options else None
    except json.JSONDecodeError as e:
        sys.exit(f'evaluate: --dataset_options is not valid JSON: {e}')
    cli.exit_on_bad_input(
        'evaluate',
        evaluate_run,
        f.model,
        f.split,
        dataset=f.dataset,
        dataset_options=options,
        batch_size=f.batch_size,
        out=f.out,
        **cli.model_options(),
    )


if __name__ == '__main__':
    cli.define_model_flags()
    cli.define_cache_flag()
    flags.DEFINE_string('split', None, "dataset split (a training run: its config's eval_split)")
    flags.DEFINE_string('dataset', None, 'a source name (data/sources.py); a run: its own')
    flags.DEFINE_string(
        'dataset_options', None, 'JSON options of --dataset, e.g. {"data_dir": "/data/tfds"}'
    )
    flags.DEFINE_integer('batch_size', None, "global batch (default: the run's, or one per device)")
    flags.DEFINE_string('out', None, 'write the metrics here as JSON')
    flags.mark_flags_as_required(['model'])
    app.run(main)
