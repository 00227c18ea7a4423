"""The training loop's side actions (loop.Hook), and their list: `make_hooks` is the one place
that says which hooks a run has and in which order they see each step.

Hooks do not hold one another: what one knows and another needs (the newest checkpoint, the
skipped updates, the input wait, the evaluations) goes through the run's record,
`loop.record` (loop.RunRecord), written by one hook and read by those after it.

Steps are numbered by how many are done (a checkpoint of step k resumes with batch k).
"""

import json
import math
import sys
import time
from pathlib import Path

import jax
from tqdm import tqdm

from retinanet_jax import checkpoint
from retinanet_jax.data import input_position
from retinanet_jax.errors import UserError
from retinanet_jax.evaluation import coco_metrics
from retinanet_jax.training.loop import Hook, Loop, StepResult
from retinanet_jax.training.preemption import Preempted, PreemptionWatcher


class NonFiniteStep(UserError, FloatingPointError):
    """A non-finite loss or gradient stopped the run (NonFiniteGuard): the message names the
    step, its images and the last good checkpoint."""


def is_due(step: int, every: int, total: int) -> bool:
    """Whether a periodic action runs after `step`: every `every` steps and after the last."""
    return step % every == 0 or step == total


def save_checkpoint(loop: Loop, manager, order: dict, step: int, state) -> None:
    """Saves the state after `step` with its input position (data/input_position.py), unless
    saved already; loop.record says so (last_saved, last_checkpoint)."""
    if loop.record.last_saved != step:
        checkpoint.save_run(manager, step, state, input_position.position(step, order))
        loop.record.last_saved = step
        loop.record.last_checkpoint = f'{manager.directory}/{step}'


class Checkpointer(Hook):
    """Saves {'model', 'optimizer'[, 'ema']} with the input position every `every` steps and
    after the last (a resumed run's start counts as saved)."""

    def __init__(self, manager, every: int, order: dict):
        self.manager, self.every, self.order = manager, every, order

    def before_train(self, loop: Loop) -> None:
        if loop.start_step and loop.record.last_saved is None:
            loop.record.last_saved = loop.start_step
            loop.record.last_checkpoint = f'{self.manager.directory}/{loop.start_step}'

    def wants_state(self, loop: Loop, step: int) -> bool:
        return is_due(step, self.every, loop.total_steps)

    def with_state(self, loop: Loop, step: int, state) -> None:
        save_checkpoint(loop, self.manager, self.order, step, state)


class NonFiniteGuard(Hook):
    """A step whose loss or gradient norm is not finite. skip_limit 0: FloatingPointError naming
    the step, the batch's image ids (and files, where the source knows them) and the last good
    checkpoint; the update was applied, so nothing after it is saved. skip_limit N > 0: the
    train step kept the state (metric 'skipped'); each skip is logged with its images, counted
    in the metrics ('nonfinite_skipped'), and N + 1 in a row stop the run."""

    def __init__(self, skip_limit: int, describe=None):
        self.skip_limit = skip_limit
        self.describe = describe or (lambda ids: '')
        self.skipped = self.in_a_row = 0

    def finished_step(self, loop: Loop, result: StepResult) -> None:
        m = result.host
        finite = math.isfinite(m['loss']) and math.isfinite(m['grad_norm'])
        if finite and not m.get('skipped'):
            self.in_a_row = 0
            return
        ids = [int(i) for i in result.image_ids if i >= 0]
        what = (
            f'non-finite loss {m["loss"]} / gradient norm {m["grad_norm"]} at step '
            f'{result.step}, images {ids}{self.describe(ids)}'
        )
        last = loop.record.last_checkpoint
        if not self.skip_limit:
            raise NonFiniteStep(
                f'{what}; the last good checkpoint: {last} (config.skip_nonfinite=N skips such '
                'updates)'
            )
        self.skipped += 1
        self.in_a_row += 1
        loop.record.skipped = self.skipped
        print(
            f'warning: {what}: update skipped ({self.in_a_row} in a row)',
            file=sys.stderr,
            flush=True,
        )
        if self.in_a_row > self.skip_limit:
            raise NonFiniteStep(
                f'{what}: {self.in_a_row} non-finite steps in a row (config.skip_nonfinite='
                f'{self.skip_limit}); the last checkpoint: {last}'
            )


class InputWait(Hook):
    """How much of the training time the loop spent waiting for batches (StepResult's
    input_seconds), over each window of log_every steps (the first step, which starts the
    pipeline, left out): `share`, shown by Progress and written by MetricLogger. Once a window
    waits more than `warn_above` of its time, one warning names the cause and the knobs."""

    def __init__(self, log_every: int, warn_above: float = 0.1, enabled: bool = True):
        self.log_every, self.warn_above, self.enabled = log_every, warn_above, enabled
        self.share, self.warned = None, False

    def before_train(self, loop: Loop) -> None:
        self.waited, self.steps, self.mark = 0.0, 0, None

    def finished_step(self, loop: Loop, result: StepResult) -> None:
        now = time.perf_counter()
        if self.mark is None:  # the first step: compilation and the pipeline's start
            self.mark = now
            return
        self.waited += result.input_seconds
        self.steps += 1
        due = is_due(result.step, self.log_every, loop.total_steps)
        if not due or self.steps < self.log_every:  # whole windows only (a short one is noise)
            return
        self.share = min(self.waited / max(now - self.mark, 1e-9), 1.0)
        loop.record.input_wait_share = self.share
        self.waited, self.steps, self.mark = 0.0, 0, now
        if self.share > self.warn_above and not self.warned and self.enabled:
            self.warned = True
            tqdm.write(
                f'warning: the steps waited for their batches {self.share:.0%} of the '
                f'time up to step {result.step}: the input pipeline (decoding and augmentation '
                'on the host) is slower than the train step. Give it worker processes '
                '(--config.data.read_workers; -1, the default, is one per core on a GPU), more '
                'threads (--config.data.read_threads, default 4 per core) or host cores, or '
                'make examples cheaper (smaller images, --config.input.*)'
            )


class CutBoxes(Hook):
    """Counts the ground-truth boxes that input.max_boxes cut from this process's training
    examples (StepResult.boxes_cut) into record.boxes_cut, written by MetricLogger as
    `boxes_cut`: process 0's share of the batches (the others' shares are drawn alike), since
    this process started (a resumed run counts anew). The first time any are cut, one warning:
    their objects are trained on as background, so the usual cure is a larger max_boxes."""

    def __init__(self, max_boxes: int, enabled: bool = True):
        self.max_boxes, self.enabled, self.warned = max_boxes, enabled, False

    def finished_step(self, loop: Loop, result: StepResult) -> None:
        loop.record.boxes_cut += result.boxes_cut
        if result.boxes_cut and not self.warned and self.enabled:
            self.warned = True
            tqdm.write(
                f"warning: {result.boxes_cut} ground-truth box(es) of step {result.step}'s "
                f'examples are beyond input.max_boxes={self.max_boxes} and were cut: their '
                'objects are trained on as background. Raise --config.input.max_boxes '
                '(show_data counts them; TensorBoard: boxes_cut)'
            )


class Progress(Hook):
    """tqdm over finished steps (rate and ETA from the last ~20), loss, positives and the share
    of time spent waiting for input (record.input_wait_share) in its postfix every log_every
    steps; record.first_step_seconds: from `entered` to the first step's end."""

    def __init__(self, log_every: int, entered: float, enabled: bool):
        self.log_every, self.entered, self.enabled = log_every, entered, enabled

    def before_train(self, loop: Loop) -> None:
        self.bar = tqdm(
            initial=loop.start_step,
            total=loop.total_steps,
            desc='train',
            smoothing=0.05,
            disable=not self.enabled,
        )

    def finished_step(self, loop: Loop, result: StepResult) -> None:
        if loop.record.first_step_seconds is None:
            loop.record.first_step_seconds = time.time() - self.entered
        self.bar.update(1)
        if is_due(result.step, self.log_every, loop.total_steps):
            m = result.host
            shown = {'loss': f'{m["loss"]:.3f}', 'pos': f'{m["positives_per_image"]:.0f}'}
            if loop.record.input_wait_share is not None:
                shown['input_wait'] = f'{loop.record.input_wait_share:.0%}'
            self.bar.set_postfix(shown)

    def after_train(self, loop: Loop) -> None:
        self.bar.close()


class MetricLogger(Hook):
    """Every log_every steps and after the last: the step's metrics (loss terms, learning rate,
    gradient norm, positives), images_per_second (of finished steps since the start),
    nonfinite_skipped, boxes_cut (record.boxes_cut: process 0's, since it started) and
    zero_positive_steps (the share of the steps since the last write
    whose batch matched no anchor to any object) and input_wait_share (the record's), to
    TensorBoard (process 0)."""

    def __init__(self, writer, log_every: int, batch_size: int):
        self.writer, self.log_every, self.batch_size = writer, log_every, batch_size

    def before_train(self, loop: Loop) -> None:
        self.start = time.time()
        self.steps, self.without_positives = 0, 0  # since the last write

    def finished_step(self, loop: Loop, result: StepResult) -> None:
        self.steps += 1
        self.without_positives += int(result.host.get('num_positives', 1) == 0)
        if self.writer is None or not is_due(result.step, self.log_every, loop.total_steps):
            return
        seconds = time.time() - self.start
        metrics = {
            **result.host,
            'images_per_second': self.batch_size * (result.step - loop.start_step) / seconds,
            'nonfinite_skipped': loop.record.skipped,
            'boxes_cut': loop.record.boxes_cut,
            'zero_positive_steps': self.without_positives / self.steps,
        }
        if loop.record.input_wait_share is not None:
            metrics['input_wait_share'] = loop.record.input_wait_share
        self.writer.write(result.step, metrics)
        self.steps, self.without_positives = 0, 0


class BadRecordLog(Hook):
    """Writes the records that data.on_bad_record='skip' replaced (bad_records.BadRecords) to
    `path` whenever the list grew, checked after every step (a preempted or failed run has
    written what it met) and at the end."""

    def __init__(self, bad_records, path: Path):
        self.bad_records, self.path = bad_records, path
        self.written = len(bad_records.entries())

    def _write(self) -> None:
        entries = self.bad_records.entries()
        if len(entries) != self.written:
            self.path.write_text(json.dumps(entries, indent=1))
            self.written = len(entries)

    def finished_step(self, loop: Loop, result: StepResult) -> None:
        self._write()

    def after_train(self, loop: Loop) -> None:
        self._write()


class Evaluator(Hook):
    """Evaluates the train state (`evaluate(state) -> metrics`: the raw weights' and, with an
    EMA, 'ema/...' those of the EMA weights) every `every` steps and after the last, into
    record.evaluations {step: metrics} (record.eval_seconds: the time taken); intermediate
    tables printed, metrics and pictures written."""

    def __init__(self, evaluate, every: int, writer, pictures=None):
        self.evaluate, self.every, self.writer = evaluate, every, writer
        self.pictures = pictures  # pictures(state) -> {name: uint8 [N, H, W, 3]}, or None

    def wants_state(self, loop: Loop, step: int) -> bool:
        return is_due(step, self.every, loop.total_steps)

    def with_state(self, loop: Loop, step: int, state) -> None:
        start = time.time()
        metrics = loop.record.evaluations[step] = self.evaluate(state)
        pictures = self.pictures(state) if self.pictures else {}  # every process: collective
        loop.record.eval_seconds += time.time() - start
        if self.writer:
            self.writer.write(step, {f'eval/{k}': v for k, v in metrics.items()})
            self.writer.images(step, pictures)
        if step != loop.total_steps:
            tqdm.write(f'step {step} eval:\n{coco_metrics.format_table(metrics)}')


class BestCheckpointer(Hook):
    """After each evaluation (every `every` steps and last; record.evaluations, written by the
    Evaluator before it) offers the evaluated weights to `manager`
    (checkpoint.best_checkpoints), scored by the evaluation's `metric`: DIR/best keeps the best
    so far (config.keep_best)."""

    def __init__(self, manager, every: int, metric: str):
        self.manager, self.every, self.metric = manager, every, metric

    def wants_state(self, loop: Loop, step: int) -> bool:
        return is_due(step, self.every, loop.total_steps)

    def with_state(self, loop: Loop, step: int, state) -> None:
        metrics = loop.record.evaluations[step]
        check_metric(self.metric, metrics)
        checkpoint.save_best(self.manager, step, state, {self.metric: metrics[self.metric]})

    def after_train(self, loop: Loop) -> None:
        self.manager.close()


def check_metric(metric: str, names) -> None:
    """UserError unless `metric` (config.keep_best) is one of an evaluation's `names`."""
    if metric not in names:
        raise UserError(
            f"config.keep_best={metric!r} is not a metric of this run's evaluation; "
            f'known: {sorted(k for k in names if "/" not in k or k.startswith("ema/"))}'
        )


class PreemptionHook(Hook):
    """On SIGTERM / SIGINT (preemption.PreemptionWatcher): after the step in flight, every
    process at the same step, saves that step (unless just saved) and raises Preempted."""

    def __init__(self, manager, order: dict, watcher: PreemptionWatcher):
        self.manager, self.order, self.watcher = manager, order, watcher

    def wants_state(self, loop: Loop, step: int) -> bool:
        return self.watcher.reached(step)

    def with_state(self, loop: Loop, step: int, state) -> None:
        save_checkpoint(loop, self.manager, self.order, step, state)
        raise Preempted(step, self.watcher.signal_name, loop.record.last_checkpoint)


def make_hooks(
    settings,
    workdir: Path,
    manager,
    order: dict,
    evaluate,
    watcher: PreemptionWatcher,
    entered: float,
    describe=None,
    bad_records=None,
) -> list[Hook]:
    """A run's hooks, in the order they see each step (settings: settings.Settings; manager:
    the run's checkpoints; order: its input order; evaluate: the run's evaluation, with
    .pictures; describe(ids) -> the files of a batch's images, for messages; bad_records:
    data.on_bad_record='skip''s BadRecords, else None). Process 0 alone prints and writes logs.

      NonFiniteGuard    a non-finite loss or gradient: stop naming the step and its images, or
                        count a skipped update (config.skip_nonfinite)
      InputWait         the share of time spent waiting for batches (before those showing it)
      CutBoxes          ground-truth boxes cut by input.max_boxes: counted, warned of once
      Progress          the progress bar over finished steps (rate, ETA, loss, positives)
      MetricLogger      scalars to TensorBoard every log_every steps
      BadRecordLog      records replaced under data.on_bad_record='skip' -> bad_records.json
      Checkpointer      the train state and input position every checkpoint_every steps, last
      PreemptionHook    SIGTERM / SIGINT: a checkpoint of the step reached, then Preempted
                        (before evaluating: the save comes first)
      Evaluator         evaluation every eval_every steps and last, into record.evaluations
      BestCheckpointer  config.keep_best: the best evaluation's checkpoint in DIR/best (after
                        the Evaluator, whose metrics it reads)
    """
    from retinanet_jax.training.metric_writer import MetricWriter

    lead = jax.process_index() == 0
    writer = MetricWriter(workdir / 'logs') if lead else None
    every = settings.log_every
    hooks = [
        NonFiniteGuard(settings.skip_nonfinite, describe),
        InputWait(every, enabled=lead),
        CutBoxes(settings.input.max_boxes, enabled=lead),
        Progress(every, entered, lead),
        MetricLogger(writer, every, settings.batch_size),
    ]
    if bad_records is not None:
        hooks.append(BadRecordLog(bad_records, bad_records_file(workdir)))
    hooks += [
        Checkpointer(manager, settings.checkpoint_every, order),
        PreemptionHook(manager, order, watcher),
        Evaluator(evaluate, settings.eval_every, writer, evaluate.pictures),
    ]
    if settings.keep_best:
        best = checkpoint.best_checkpoints(workdir, settings.keep_best)
        hooks.append(BestCheckpointer(best, settings.eval_every, settings.keep_best))
    return hooks


def bad_records_file(workdir: Path) -> Path:
    """Where data.on_bad_record='skip' lists the records it replaced (one file per process:
    each reads its own share)."""
    k = jax.process_index()
    return workdir / ('bad_records.json' if jax.process_count() == 1 else f'bad_records.{k}.json')
