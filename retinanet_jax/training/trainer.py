"""Training: `train_and_evaluate(config, workdir)`, what `python train.py --config=...` runs.

It reads the config once (settings.from_config), sets up the input (a resumable, index-level
order: data/pipeline.py), the train state (state.py: resumed from the newest readable
checkpoint, else fresh), the sharded train step (step.py) and the evaluation
(TrainEvaluation: evaluation/split_evaluation.py's, with the EMA's and pictures), then runs the
loop (loop.py) with its side actions (hooks.make_hooks: the non-finite guard, progress,
metrics, the bad-record log, checkpoints, the preemption save, evaluation, the best
checkpoint). A new side action is one more hook in make_hooks; the loop itself does not change.
"""

import dataclasses
import functools
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from retinanet_jax import checkpoint, sharding
from retinanet_jax import settings as settings_lib
from retinanet_jax.data import input_position, pipeline
from retinanet_jax.data.bad_records import BadRecords
from retinanet_jax.errors import UserError
from retinanet_jax.evaluation import coco_metrics, split_evaluation, tiled_evaluation
from retinanet_jax.evaluation import pictures as eval_pictures
from retinanet_jax.inference import tiling
from retinanet_jax.inference.predictor import Predictor
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.training import hooks, preemption
from retinanet_jax.training import state as train_state
from retinanet_jax.training.loop import Loop
from retinanet_jax.training.step import make_train_step


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains (resuming from `workdir` if it holds checkpoints), evaluates, returns metrics.
    A SIGTERM / SIGINT from here on (set-up and compilation included) ends the run after the
    next step, with a checkpoint of it: preemption.Preempted is raised."""
    with preemption.PreemptionWatcher() as watcher:
        return train_with(watcher, config, workdir)


def train_with(watcher: preemption.PreemptionWatcher, config, workdir: str) -> dict:
    """train_and_evaluate, stopped by `watcher`'s signals."""
    entered = time.time()
    settings = settings_lib.from_config(config)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh()
    data = TrainingData.make(settings, workdir)
    manager = checkpoint.run_checkpoints(workdir, keep=settings.keep_checkpoints)
    names = data.source.label_map.names
    graph, state, start_step = train_state.resume_or_create(
        settings, mesh, manager, data.order, names
    )
    if jax.process_index() == 0:  # only once the workdir is known to be this run's
        (workdir / 'config.json').write_text(settings_lib.to_json(config))
    evaluate = TrainEvaluation(settings, graph, data, mesh)
    describe = functools.partial(data.describe, settings.data.train_split)
    run_hooks = hooks.make_hooks(
        settings, workdir, manager, data.order, evaluate, watcher, entered, describe, data.bad
    )
    anchors = np.asarray(anchor_lib.generate_anchors(settings.input.train_size, settings.anchors))
    start = time.time()
    describe_data(settings, data.source)
    workers = settings.data.workers_for(jax.default_backend())
    if workers and jax.process_index() == 0:
        print(f'reading training batches in {workers} worker processes (config.data.read_workers)')
    batches = pipeline.train_iterator(data.train, start_step, settings.data.read_threads, workers)
    loop = Loop(
        make_train_step(graph, anchors, settings, mesh),
        batches,
        functools.partial(sharding.to_global, mesh=mesh),
        state,
        start_step,
        settings.train_steps,
        run_hooks,
    )
    try:
        with manager:
            state = loop.run()
    finally:  # reader threads or worker processes stop, whatever ended the loop
        batches.close()
    record = loop.record
    final = record.evaluations.get(settings.train_steps) or evaluate(state, None)
    wall = time.time() - start
    summary = {
        'step': settings.train_steps,
        'wall_seconds': wall,
        'train_seconds': wall - record.eval_seconds,
        'first_step_seconds': record.first_step_seconds,
        'nonfinite_skipped': record.skipped,
        'boxes_cut': record.boxes_cut,
        **final,
    }
    write_summary(workdir, summary, f'{settings.data.evaluated} {settings.data.eval_split}')
    return summary


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """A run's training input on this process: its share of the training batches (a grain
    MapDataset, batch k = step k), the order they follow (what a checkpoint records), the
    source evaluated on, and the bad-record log of data.on_bad_record='skip' (else None)."""

    source: object  # data.source.Source of the training split
    train: object
    order: dict
    evaluated: object  # the Source evaluated on
    bad: BadRecords | None

    @classmethod
    def make(cls, settings: settings_lib.Settings, workdir: Path) -> 'TrainingData':
        local_batch = sharding.local_batch_size(settings.batch_size)
        source, evaluated = settings_lib.make_sources(settings)
        process = dict(process_index=jax.process_index(), process_count=jax.process_count())
        bad = None
        if settings.data.on_bad_record == 'skip':  # those of the run so far, if it resumes
            bad = BadRecords(settings.data.max_bad_fraction, jax.process_count())
            bad.load(hooks.bad_records_file(workdir))
        split = settings.data.train_split
        train = pipeline.train_dataset(
            source, settings.input, local_batch, split=split, bad_records=bad, **process
        )
        order = input_position.order_of(
            source, settings.input, local_batch, split=split, process_count=jax.process_count()
        )
        return cls(source, train, order, evaluated, bad)

    def describe(self, split: str, ids) -> str:
        """The files of a batch's images, where the source reads files (for messages)."""
        files = self.source.image_files(split, ids)
        return f' (files {files})' if files else ''


class TrainEvaluation:
    """The run's evaluation of a train state on its evaluation split (a SplitEvaluation, as
    the evaluate command's), with its EMA and pictures.

    evaluate(state, progress=tqdm) -> metrics: COCO metrics and the validation loss of the
        raw weights and, with an EMA ('ema' in state), 'ema/...' those of the EMA weights
    evaluate.pictures(state) -> {name: uint8 [N, H, W, 3]}: the PR curves of the last
        evaluation's weights, and the detections of a fixed set of validation images (the
        first evaluation batch of this process, the weights predict takes) beside their
        ground truth

    With config.evaluation.tile_size (tiled_evaluation.run_tiles), every validation image is
    evaluated at its own resolution by sliced inference, as `evaluate --tile_size` does (no
    validation loss), and the pictured image is the top-left corner, at most two windows a
    side, of the split's first image."""

    def __init__(self, settings: settings_lib.Settings, graph, data: TrainingData, mesh):
        self.settings, self.mesh = settings, mesh
        self.split = split_evaluation.SplitEvaluation.make(
            graph.eval_model,
            settings.input,
            settings.anchors,
            settings.postprocess,
            settings.loss,
            data.evaluated,
            settings.data.eval_split,
            settings.batch_size,
            mesh,
            settings.evaluation,
        )
        self.names = data.evaluated.label_map.names
        self.fixed = None  # the pictured batch, read on first use
        self.graph, self.source = graph, data.evaluated
        self.tiles = tiled_evaluation.run_tiles(settings)
        if settings.keep_best:  # named now, not at the first evaluation
            if self.tiles is not None and settings.keep_best.endswith('_loss'):
                raise UserError(
                    f'config.keep_best={settings.keep_best!r}: an evaluation by tiles '
                    '(config.evaluation.tile_size) has no validation loss; keep the best by AP'
                )
            hooks.check_metric(settings.keep_best, self.metric_names())

    def metric_names(self) -> list[str]:
        """The names of the metrics that __call__ gives, before any evaluation."""
        raw = self.split.metric_names()
        if self.tiles is not None:  # no validation loss by tiles
            raw = self.split.evaluator.metric_names()
        return raw + [f'ema/{k}' for k in raw] if self.settings.ema.enabled else raw

    def __call__(self, state, progress=tqdm) -> dict:
        metrics = self._evaluate(state['model'], progress)
        if 'ema' in state:
            ema = self._evaluate(state['ema'], progress)
            metrics |= {f'ema/{k}': v for k, v in ema.items()}
        # the curves of the weights evaluated last: the EMA's where there is one, as pictured
        self.curves = self.split.evaluator.pr_curves_at((0.5, 0.75))
        return metrics

    def _evaluate(self, weights, progress) -> dict:
        if self.tiles is None:
            return self.split(weights, progress)
        split, evaluator = self.settings.data.eval_split, self.split.evaluator
        return tiled_evaluation.evaluate_tiled(
            self.predictor(weights), self.source, split, evaluator, self.tiles, progress
        )

    def predictor(self, weights) -> Predictor:
        """The Predictor of model weights of this run (for sliced evaluation)."""
        graphdef = self.graph.eval_model
        return Predictor.of_run(self.settings, graphdef, weights, self.mesh, 'the train state')

    def pictures(self, state) -> dict[str, np.ndarray]:
        weights = 'EMA weights' if 'ema' in state else 'raw weights'
        curves = eval_pictures.pr_curve_picture(self.curves, title=weights)
        if self.tiles is not None:
            pictures = self._tiled_pictures(state.get('ema', state['model']))
            return {'eval/predictions': pictures, 'eval/pr_curves': curves[None]}
        if self.fixed is None:
            self.fixed = next(iter(self.split.batches()))
        batch = self.fixed
        weights = state.get('ema', state['model'])
        dets = self.split.predict(weights, sharding.to_global(batch, self.mesh))
        dets = sharding.to_local(dets, self.mesh)
        dets.pop('loss_terms')
        sy, sx = batch['scale'][:, 0, None], batch['scale'][:, 1, None]  # to the resized image
        dets['boxes'] = dets['boxes'] * np.stack([sx, sy, sx, sy], axis=-1)
        shown = np.asarray(batch['valid'])
        pictures = eval_pictures.prediction_pictures(
            batch['image'][shown],
            batch['gt_boxes'][shown],
            batch['gt_labels'][shown],
            {k: np.asarray(v)[shown] for k, v in dets.items()},
            self.names,
        )
        return {'eval/predictions': pictures, 'eval/pr_curves': curves[None]}

    def _tiled_pictures(self, weights) -> np.ndarray:
        """The detections by tiles of the top-left corner of the split's first image (at most
        two windows a side, at its own resolution, predicted alone), beside its ground truth."""
        example = self.source.example(self.settings.data.eval_split, 0)
        side = 2 * self.tiles.size  # run_tiles: always a size
        image = example['image'][:side, :side]
        h, w = image.shape[:2]
        dets = tiling.predict_tiled(self.predictor(weights), [image], self.tiles)[0]

        def corner(boxes):  # the boxes centred in the corner, clipped to it
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            inside = ((boxes[:, 0] + boxes[:, 2]) / 2 < w) & ((boxes[:, 1] + boxes[:, 3]) / 2 < h)
            return np.clip(boxes, 0, [w, h, w, h]).astype(np.float32), inside

        gt, real = corner(example['boxes'])
        real &= ~np.asarray(example['is_crowd'], bool)
        found, shown = corner(dets['boxes'])
        return eval_pictures.prediction_pictures(
            image[None],
            gt[real][None],
            np.asarray(example['labels'], np.int32)[real][None],
            {
                'boxes': found[shown][None],
                'scores': dets['scores'][shown][None],
                'labels': dets['labels'][shown][None],
                'valid': np.ones((1, int(shown.sum())), bool),
            },
            self.names,
        )


def describe_data(settings: settings_lib.Settings, source) -> None:
    """One line on the training data (process 0): its images and, where the source knows them,
    those with no object (background only: every anchor a negative)."""
    if jax.process_index() != 0:
        return
    split = settings.data.train_split
    background = source.background_images(split)
    note = '' if background is None else f', {background} of them background only (no object)'
    print(f'training data: {source.name} {split}, {source.num_examples(split)} images{note}')
    c = settings.input
    if c.crop_size is not None:
        low, high = c.crop_scale
        scale = 'their own scale' if low == high == 1 else f'scales {low:g}-{high:g}'
        tile = settings.evaluation.tile_size
        evaluating = (
            f'evaluating by {tile}-pixel windows of each image at its own resolution '
            '(config.evaluation.tile_size)'
            if tile
            else f'evaluating whole images resized to {c.image_size[0]}x{c.image_size[1]} '
            'canvases (config.input.image_size; config.evaluation.tile_size evaluates by windows)'
        )
        print(
            f'training by {c.crop_size[0]}x{c.crop_size[1]} windows of the images at {scale} '
            f'(config.input.crop_size); {evaluating}'
        )


def write_summary(workdir: Path, summary: dict, evaluated: str) -> None:
    """metrics.json and the final table (process 0)."""
    if jax.process_index() == 0:
        (workdir / 'metrics.json').write_text(json.dumps(summary, indent=1))
        print(f'final evaluation ({evaluated}):')
        print(coco_metrics.format_table(summary))
        print(f'wrote {workdir}/metrics.json')
