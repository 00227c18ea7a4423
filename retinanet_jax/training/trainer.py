"""Training: `train_and_evaluate(config, workdir)`, what `python train.py --config=...` runs.

It reads the config once (settings.from_config), sets up the input (a resumable, index-level
order: data/pipeline.py), the train state (train_state.py: resumed from the newest readable
checkpoint, else fresh) and the sharded train step (train_step.py), then runs the loop
(loop.py) with its side actions (hooks.py): the non-finite guard, progress, metrics, the
bad-record log, checkpoints, the preemption save and evaluation. A new side action is one more
hook in `side_actions`; the loop itself does not change.
"""

import dataclasses
import functools
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from retinanet_jax import checkpoint, settings, sharding
from retinanet_jax.data import pipeline
from retinanet_jax.data.bad_records import BadRecords
from retinanet_jax.evaluation import coco_metrics, split_evaluation
from retinanet_jax.evaluation import pictures as eval_pictures
from retinanet_jax.ops import anchors as anchor_lib
from retinanet_jax.training import hooks, metric_writer, preemption
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
    s = settings.from_config(config)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh()
    data = TrainingData.make(s, workdir)
    manager = checkpoint.run_checkpoints(workdir, keep=s.keep_checkpoints)
    graph, state, start_step = train_state.resume_or_create(s, mesh, manager, data.order)
    if jax.process_index() == 0:  # only once the workdir is known to be this run's
        (workdir / 'config.json').write_text(settings.to_json(config))
    evaluate = TrainEvaluation(s, graph, data, mesh)
    actions = side_actions(s, workdir, manager, data, evaluate, watcher, start_step, entered)
    anchors = np.asarray(anchor_lib.generate_anchors(s.image_hw, s.anchors))
    start = time.time()
    workers = s.data.workers_for(jax.default_backend())
    if workers and jax.process_index() == 0:
        print(f'reading training batches in {workers} worker processes (config.data.read_workers)')
    batches = pipeline.train_iterator(data.train, start_step, s.data.read_threads, workers)
    try:
        with manager:
            state = Loop(
                make_train_step(graph, anchors, s, mesh),
                batches,
                functools.partial(sharding.to_global, mesh=mesh),
                state,
                start_step,
                s.train_steps,
                list(actions.values()),
            ).run()
    finally:  # reader threads or worker processes stop, whatever ended the loop
        batches.close()
    evaluations = actions['evaluation']
    final = evaluations.history.get(s.train_steps) or evaluate(state, None)
    wall = time.time() - start
    summary = {
        'step': s.train_steps,
        'wall_seconds': wall,
        'train_seconds': wall - evaluations.seconds,
        'first_step_seconds': actions['progress'].first_step_seconds,
        'nonfinite_skipped': actions['non_finite'].skipped,
        **final,
    }
    write_summary(workdir, summary, f'{s.data.evaluated} {s.data.eval_split}')
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
    def make(cls, s: settings.Settings, workdir: Path) -> 'TrainingData':
        local_batch = sharding.local_batch_size(s.batch_size)
        source, evaluated = settings.make_sources(s)
        process = dict(process_index=jax.process_index(), process_count=jax.process_count())
        bad = None
        if s.data.on_bad_record == 'skip':  # those of the run so far, if it resumes
            bad = BadRecords(s.data.max_bad_fraction, jax.process_count())
            bad.load(bad_records_file(workdir))
        split = s.data.train_split
        train = pipeline.train_dataset(
            source, s.input, local_batch, split=split, bad_records=bad, **process
        )
        order = pipeline.order_of(
            source, s.input, local_batch, split=split, process_count=jax.process_count()
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
        ground truth"""

    def __init__(self, s: settings.Settings, graph, data: TrainingData, mesh):
        self.s, self.mesh = s, mesh
        self.split = split_evaluation.SplitEvaluation.make(
            graph.eval_model,
            s.input,
            s.anchors,
            s.postprocess,
            s.loss,
            data.evaluated,
            s.data.eval_split,
            s.batch_size,
            mesh,
            s.evaluation,
        )
        self.names = data.evaluated.label_map.names
        self.fixed = None  # the pictured batch, read on first use
        if s.keep_best:  # named now, not at the first evaluation
            hooks.check_metric(s.keep_best, self.metric_names())

    def metric_names(self) -> list[str]:
        """The names of the metrics that __call__ gives, before any evaluation."""
        raw = self.split.metric_names()
        return raw + [f'ema/{k}' for k in raw] if self.s.ema.enabled else raw

    def __call__(self, state, progress=tqdm) -> dict:
        metrics = self.split(state['model'], progress)
        if 'ema' in state:
            ema = self.split(state['ema'], progress)
            metrics |= {f'ema/{k}': v for k, v in ema.items()}
        # the curves of the weights evaluated last: the EMA's where there is one, as pictured
        self.curves = self.split.evaluator.pr_curves_at((0.5, 0.75))
        return metrics

    def pictures(self, state) -> dict[str, np.ndarray]:
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
        weights = 'EMA weights' if 'ema' in state else 'raw weights'
        curves = eval_pictures.pr_curve_picture(self.curves, title=weights)
        return {'eval/predictions': pictures, 'eval/pr_curves': curves[None]}


def side_actions(
    s: settings.Settings, workdir, manager, data, evaluate, watcher, start_step, entered
) -> dict[str, hooks.Hook]:
    """The loop's side actions, by name, in the order they see each step."""
    writer = metric_writer.MetricWriter(workdir / 'logs') if jax.process_index() == 0 else None
    checkpointer = hooks.Checkpointer(manager, s.checkpoint_every, data.order, start_step)
    describe = functools.partial(data.describe, s.data.train_split)
    guard = hooks.NonFiniteGuard(s.skip_nonfinite, checkpointer, describe)
    waits = hooks.InputWait(s.log_every, enabled=jax.process_index() == 0)
    progress = hooks.Progress(s.log_every, entered, jax.process_index() == 0, waits)
    bad = None if data.bad is None else hooks.BadRecordLog(data.bad, bad_records_file(workdir))
    evaluations = hooks.Evaluator(evaluate, s.eval_every, writer, progress, evaluate.pictures)
    best = None
    if s.keep_best:
        best_manager = checkpoint.best_checkpoints(workdir, s.keep_best)
        best = hooks.BestCheckpointer(best_manager, evaluations, s.keep_best)
    actions = {
        'non_finite': guard,
        'input_wait': waits,  # before progress and metrics, which show its share
        'progress': progress,
        'metrics': hooks.MetricLogger(writer, s.log_every, s.batch_size, guard, waits),
        'bad_records': bad,  # data.on_bad_record='skip' only
        'checkpoints': checkpointer,
        'preemption': hooks.PreemptionHook(checkpointer, watcher),  # before evaluating: save
        'evaluation': evaluations,
        'best': best,  # config.keep_best only
    }
    return {name: hook for name, hook in actions.items() if hook is not None}


def bad_records_file(workdir: Path) -> Path:
    """Where data.on_bad_record='skip' lists the records it replaced (one file per process:
    each reads its own share)."""
    k = jax.process_index()
    return workdir / ('bad_records.json' if jax.process_count() == 1 else f'bad_records.{k}.json')


def write_summary(workdir: Path, summary: dict, evaluated: str) -> None:
    """metrics.json and the final table (process 0)."""
    if jax.process_index() == 0:
        (workdir / 'metrics.json').write_text(json.dumps(summary, indent=1))
        print(f'final evaluation ({evaluated}):')
        print(coco_metrics.format_table(summary))
        print(f'wrote {workdir}/metrics.json')
