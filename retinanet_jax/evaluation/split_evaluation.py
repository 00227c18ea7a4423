"""A model's evaluation on a dataset split: the COCO metrics of its detections (coco_metrics.py)
and its validation loss. Training's periodic evaluation and the evaluate and analyze commands
all evaluate through SplitEvaluation, so they report the same metrics of the same weights.

  evaluation = SplitEvaluation.make(graphdef, input_config, anchors, postprocess, loss,
                                    source, split, batch_size, mesh, config)
  metrics = evaluation(model_state, progress=tqdm)   # {'AP', ..., 'val_loss', ...}
  evaluation.metric_names()                          # those keys, before any evaluation
  prepared = prepare(model, split, dataset=..., ...) # a model path on a split (the commands)
  metrics = prepared.run()

Every image of the split is predicted once (each process its share, in fixed-size batches
whose padding is masked), and the evaluator (CocoEvaluator) gathers the detections across
processes. The validation loss ('val_loss', 'val_cls_loss', 'val_box_loss') is the training
loss of the same batches, normalised over the whole split (losses.normalised_loss).
"""

import dataclasses
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from retinanet_jax import settings as settings_lib
from retinanet_jax import sharding
from retinanet_jax.data import pipeline
from retinanet_jax.data.input_config import InputConfig
from retinanet_jax.data.label_maps import LabelMap
from retinanet_jax.errors import UserError
from retinanet_jax.evaluation import coco_metrics
from retinanet_jax.inference import loading, model_path
from retinanet_jax.inference.predictor import Predictor, make_predict_step
from retinanet_jax.ops import losses
from retinanet_jax.ops.anchors import AnchorConfig
from retinanet_jax.ops.postprocess import PostprocessConfig

LOSS_NAMES = ('val_loss', 'val_cls_loss', 'val_box_loss')
RUN_TILES = 'run'  # Prepared.run: the tiles of the run's own evaluation (config.evaluation)


@dataclasses.dataclass(frozen=True)
class SplitEvaluation:
    """Evaluates model states on one split: `evaluation(model_state) -> metrics`."""

    predict: object  # make_predict_step(..., loss_config=loss): detections and loss terms
    dataset: object  # the split's evaluation batches (pipeline.eval_dataset), this process's
    num_batches: int
    evaluator: coco_metrics.CocoEvaluator  # keeps the last evaluation's detections
    loss: losses.LossConfig
    mesh: jax.sharding.Mesh

    @classmethod
    def make(
        cls,
        graphdef,
        input_config: InputConfig,
        anchors: AnchorConfig,
        postprocess: PostprocessConfig,
        loss: losses.LossConfig,
        source,
        split: str,
        batch_size: int,
        mesh: jax.sharding.Mesh,
        config: coco_metrics.EvaluationConfig,
        detection_labels: LabelMap | None = None,
    ) -> 'SplitEvaluation':
        """The evaluation of models of `graphdef` (eval mode) on `source`'s `split`, in global
        batches of `batch_size`; `detection_labels`: the model's classes where they are not
        the source's (their category ids are mapped to the source's)."""
        process = dict(process_index=jax.process_index(), process_count=jax.process_count())
        local_batch = sharding.local_batch_size(batch_size)
        dataset, num_batches = pipeline.eval_dataset(
            source, input_config, local_batch, split=split, **process
        )
        image_hw = tuple(input_config.image_size)
        predict = make_predict_step(graphdef, image_hw, anchors, postprocess, mesh, loss)
        evaluator = coco_metrics.make_evaluator(source, split, detection_labels, config)
        return cls(predict, dataset, num_batches, evaluator, loss, mesh)

    def batches(self):
        """The split's batches (numpy), in order."""
        return pipeline.eval_batches(self.dataset)

    def metric_names(self) -> list[str]:
        """The names of the metrics that a call gives, before any evaluation."""
        return [*self.evaluator.metric_names(), *LOSS_NAMES]

    def __call__(self, model_state, progress=None) -> dict:
        """The metrics of `model_state` (the nnx state of the model; a progress bar class such
        as tqdm is optional)."""
        return evaluate_model(
            self.predict,
            model_state,
            self.batches(),
            self.num_batches,
            self.evaluator,
            self.mesh,
            progress,
            loss_config=self.loss,
        )


def evaluate_model(
    predict, state, batches, num_batches: int, evaluator, mesh, progress=None, loss_config=None
) -> dict:
    """Runs `predict` (make_predict_step) with the model `state` over evaluation batches (an
    iterable of numpy batches, e.g. pipeline.eval_batches) and returns the evaluator's metrics.
    `progress`: an optional progress-bar class (tqdm); a batch counts once its detections are
    on the host, so the bar's rate and ETA come from finished work. With `loss_config` (and a
    predict step made with it) the metrics also hold the validation loss (LOSS_NAMES),
    normalised as in training over the whole split's images."""
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


def validation_loss(terms: np.ndarray, loss_config) -> dict:
    """{'val_loss', 'val_cls_loss', 'val_box_loss'} of this process's per-image loss terms
    [n, 3] (class sum, box sum, positives) and every other process's."""
    rows = sharding.gather_rows(terms).astype(np.float32)
    loss, cls_loss, box_loss, _ = losses.normalised_loss(
        rows[:, 0], rows[:, 1], rows[:, 2], loss_config
    )
    return dict(zip(LOSS_NAMES, map(float, (loss, cls_loss, box_loss)), strict=True))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A model (a path's predictor) and its SplitEvaluation on a named split (`prepare`)."""

    predictor: Predictor
    evaluation: SplitEvaluation
    source: object  # data.source.Source
    dataset: str
    split: str
    default_out: Path | None  # a training run's <workdir>/eval_<split>.json

    @property
    def evaluator(self) -> coco_metrics.CocoEvaluator:
        return self.evaluation.evaluator

    def run(self, tiles=RUN_TILES) -> dict:
        """The metrics, with a progress bar; the evaluator keeps the detections
        (`evaluator.detections()`). `tiles`: an inference.tiling.TileConfig, by sliced
        inference, every image at its own resolution (tiled_evaluation.py; no loss); None,
        whole images on the canvas; RUN_TILES, a training run's config.evaluation tiles
        (tiled_evaluation.run_tiles: as its training evaluated), else whole images."""
        from retinanet_jax.evaluation.tiled_evaluation import evaluate_tiled, run_tiles

        if tiles == RUN_TILES:
            settings = self.predictor.settings
            tiles = None if settings is None else run_tiles(settings)
        if tiles is not None:
            return evaluate_tiled(
                self.predictor, self.source, self.split, self.evaluator, tiles, tqdm
            )
        return self.evaluation(self.predictor.state, tqdm)


def prepare(
    model: str | Path,
    split: str | None = None,
    *,
    dataset: str | None = None,
    dataset_options: dict | None = None,
    batch_size: int | None = None,
    pr_iou: float | None = None,
    pr_score_threshold: float | None = None,
    **predictor_options,
) -> Prepared:
    """`model` (model_path.resolve) ready to evaluate on a split: a training run on its own
    evaluation data unless `dataset` is given; any other model needs `dataset` and `split`.
    `pr_iou` / `pr_score_threshold`: those of precision, recall and F1 where given (else the
    run's config.evaluation, or 0.5 / 0.3). `predictor_options`: loading.load_predictor's."""
    where = model_path.resolve(model)
    if not where.is_run and (dataset is None or split is None):
        raise UserError(f'model {model} is not a training run: give its dataset and split')
    if dataset is not None and split is None:
        raise UserError(f'dataset {dataset!r}: give its split too')
    p = loading.load_predictor(model, **predictor_options)
    out = None
    if where.is_run and dataset is None:  # the run's own evaluation data
        source = p.sources[1]
        split = split or p.settings.data.eval_split
        batch_size = batch_size or p.settings.batch_size
        name = p.settings.data.evaluated
        out = where.path / f'eval_{split}.json'
    else:
        source, name = settings_lib.make_source(dataset, dataset_options or {}), dataset
        batch_size = batch_size or jax.device_count()
    # classes of the same names in the same order are the same classes, whatever ids the two
    # formats give them (YOLO's 0..K-1, the others' 1..K)
    same = p.label_map.names == source.label_map.names
    detection_labels = None if same else p.label_map
    config = p.settings.evaluation if p.settings else coco_metrics.EvaluationConfig()
    changes = dict(pr_iou=pr_iou, pr_score_threshold=pr_score_threshold)
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
    evaluation = SplitEvaluation.make(
        p.graphdef,
        p.input,
        p.anchors,
        p.postprocess,
        p.loss,
        source,
        split,
        batch_size,
        p.mesh,
        config,
        detection_labels,
    )
    return Prepared(p, evaluation, source, name, split, out)
