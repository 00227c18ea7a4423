"""Evaluate a training run's latest checkpoint on a dataset split: COCO metrics table + JSON.

  python -m retinanet_jax.evaluate --workdir=/tmp/shapes --split=validation

Reads the run's config.json and latest checkpoint (a workdir whose checkpoints do not match its
config is refused with a reason), runs the evaluation pipeline over every image of the split
once (progress bar), prints the 12 COCO stats and writes them to <workdir>/eval_<split>.json.
"""

import json
from pathlib import Path

try:  # torch, where installed, must be imported before tensorflow
    import torch  # noqa: F401
except ImportError:
    pass

import jax
from absl import app, flags
from absl import logging as absl_logging

from retinanet_jax import evaluation, sharding, train_lib
from retinanet_jax.predict import load_run


def evaluate_run(workdir: Path, split: str | None = None) -> dict:
    from tqdm import tqdm

    config, graphdef, state, step, mesh = load_run(workdir)
    split = split or config.data.eval_split
    source, input_config, pipeline = train_lib._data(config)
    predict = train_lib.make_predict_step(graphdef, tuple(input_config.image_size), config, mesh)
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    local_batch = sharding.local_batch_size(config.batch_size)
    eval_ds, num_batches = pipeline.eval_dataset(
        source, input_config, local_batch, split=split, **process
    )
    evaluator = train_lib.make_evaluator(source, split)
    metrics = train_lib.evaluate(predict, state, eval_ds, num_batches, evaluator, mesh, tqdm)
    result = {'step': step, 'split': split, **metrics}
    if jax.process_index() == 0:
        out = workdir / f'eval_{split}.json'
        out.write_text(json.dumps(result, indent=1))
        print(f'{config.data.dataset} {split}, checkpoint step {step}:')
        print(evaluation.format_table(metrics))
        print(f'wrote {out}')
    return result


def main(argv) -> None:
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every step at INFO
    evaluate_run(Path(flags.FLAGS.workdir), flags.FLAGS.split)


if __name__ == '__main__':
    flags.DEFINE_string('workdir', None, 'a training run directory (config.json + checkpoints)')
    flags.DEFINE_string('split', None, "dataset split (default: the config's eval_split)")
    flags.mark_flags_as_required(['workdir'])
    app.run(main)
