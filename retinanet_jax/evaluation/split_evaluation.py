"""Evaluation of a model on a dataset split: COCO metrics (coco_metrics.py) of its detections.

evaluate_model(predict, model_state, batches, num_batches, evaluator, mesh, progress)
    -> metrics: a jitted predict step (inference.make_predict_step) over evaluation batches
    (pipeline.eval_batches); each process predicts its share, the evaluator gathers them
prepare(model, split, dataset=..., ...) -> Evaluation: the predictor, source, evaluator and
    batches of a model on a split; Evaluation.run() -> metrics
evaluate_run(model, split, dataset=..., ...) -> {'model', 'step', 'dataset', 'split',
    **metrics}: a training run, a model directory or a torchvision state dict (as
    inference.load_predictor takes) on a split, printed as a table and written as JSON;
    what `python -m retinanet_jax.commands.evaluate` runs
"""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from retinanet_jax import sharding
from retinanet_jax.data import pipeline, sources
from retinanet_jax.evaluation import coco_metrics
from retinanet_jax.inference import predictor as inference
from retinanet_jax.ops import losses


def evaluate_model(
    predict, state, batches, num_batches: int, evaluator, mesh, progress=None, loss_config=None
) -> dict:
    """Runs `predict` (make_predict_step) with the model `state` over evaluation batches (an
    iterable of numpy batches, e.g. pipeline.eval_batches) and returns the evaluator's metrics.
    `progress`: an optional progress-bar class (tqdm); a batch counts once its detections are
    on the host, so the bar's rate and ETA come from finished work. With `loss_config` (and a
    predict step made with it) the metrics also hold the validation loss: 'val_loss',
    'val_cls_loss', 'val_box_loss', normalised as in training over the whole split's images."""
    evaluator.reset()
    pending = None  # the previous batch, whose detections are still being computed
    terms = []

    def finish(item):
        dets, batch = item
        dets = sharding.to_local(dets, mesh)
        if 'loss_terms' in dets:
            terms.append(np.asarray(dets.pop('loss_terms'))[np.asarray(batch['valid'])])
        evaluator.add_batch(dets, batch)

    bar = progress(total=num_batches, desc='eval', leave=False) if progress else None
    for batch in batches:
        dets = predict(state, sharding.to_global(batch, mesh))  # dispatched, not waited for
        if pending is not None:
            finish(pending)
            if bar is not None:
                bar.update(1)
        pending = (dets, batch)
    if pending is not None:
        finish(pending)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    metrics = evaluator.metrics()
    if loss_config is not None:
        metrics |= validation_loss(
            np.concatenate(terms) if terms else np.zeros((0, 3)), loss_config
        )
    return metrics


LOSS_NAMES = ('val_loss', 'val_cls_loss', 'val_box_loss')  # evaluate_model with a loss_config


def validation_loss(terms: np.ndarray, loss_config) -> dict:
    """{'val_loss', 'val_cls_loss', 'val_box_loss'} of this process's per-image loss terms
    [n, 3] (class sum, box sum, positives) and every other process's."""
    rows = sharding.gather_rows(terms).astype(np.float32)
    loss, cls_loss, box_loss, _ = losses.normalised_loss(
        rows[:, 0], rows[:, 1], rows[:, 2], loss_config
    )
    return dict(zip(LOSS_NAMES, map(float, (loss, cls_loss, box_loss)), strict=True))


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What evaluating a model on a split takes (`prepare`): the predictor, the split's source
    and name, an evaluator of its ground truth, and its batches."""

    predictor: inference.Predictor
    source: object  # data.source.Source
    dataset: str
    split: str
    evaluator: coco_metrics.CocoEvaluator
    batches: object  # an iterable of numpy batches
    num_batches: int
    default_out: Path | None  # a training run's <workdir>/eval_<split>.json

    def run(self) -> dict:
        """The metrics (evaluate_model, with a progress bar); the evaluator keeps the
        detections (`evaluator.detections()`)."""
        p = self.predictor
        return evaluate_model(
            p.predict, p.state, self.batches, self.num_batches, self.evaluator, p.mesh, tqdm
        )


def prepare(
    model: str | Path,
    split: str | None = None,
    *,
    dataset: str | None = None,
    dataset_options: dict | None = None,
    batch_size: int | None = None,
    **predictor_options,
) -> Evaluation:
    """An Evaluation of `model` (a training run: on its own evaluation data unless `dataset`
    is given; anything else inference.load_predictor takes needs `dataset` and `split`)."""
    model = Path(model)
    run = (model / 'config.json').is_file()
    if not run and (dataset is None or split is None):
        raise ValueError(f'--model {model} is not a training run: give --dataset and --split')
    p = inference.load_predictor(model, **predictor_options)
    out = None
    if run and dataset is None:  # the run's own evaluation data
        source = p.sources[1]
        split = split or p.settings.data.eval_split
        batch_size = batch_size or p.settings.batch_size
        name = p.settings.data.evaluated
        out = model / f'eval_{split}.json'
    else:
        source, name = sources.make_source(dataset, **(dataset_options or {})), dataset
        batch_size = batch_size or jax.device_count()
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    local_batch = sharding.local_batch_size(batch_size)
    eval_ds, num_batches = pipeline.eval_dataset(
        source, p.input, local_batch, split=split, **process
    )
    detection_labels = None if p.label_map == source.label_map else p.label_map
    config = p.settings.evaluation if p.settings else coco_metrics.EvaluationConfig()
    evaluator = coco_metrics.make_evaluator(source, split, detection_labels, config)
    batches = pipeline.eval_batches(eval_ds)
    return Evaluation(p, source, name, split, evaluator, batches, num_batches, out)


def evaluate_run(model: str | Path, split: str | None = None, *, out=None, **options) -> dict:
    """The metrics of `model` on a split (prepare's arguments), printed as a table and
    written as JSON to `out` (a training run: <workdir>/eval_<split>.json by default)."""
    e = prepare(model, split, **options)
    metrics = e.run()
    result = {
        'model': str(model),
        'step': e.predictor.step,
        'dataset': e.dataset,
        'split': e.split,
        **metrics,
    }
    out = out or e.default_out
    if jax.process_index() == 0:
        print(f'{e.predictor.description} on {e.dataset} {e.split}:')
        print(coco_metrics.format_table(metrics))
        if out is not None:
            Path(out).write_text(json.dumps(result, indent=1))
            print(f'wrote {out}')
    return result
