"""The training loop: steps, with side actions (hooks) at fixed points; hooks.py has the ones
a run uses (hooks.make_hooks: progress, metrics, checkpoints, evaluation, the non-finite guard,
preemption).

  Loop(train_step, batches, to_global, state, start_step, total_steps, hooks).run() -> state

Step k (1-based: `step` is the number of steps done) runs asynchronously: the loop dispatches
step k, then waits for step k - 1's metrics, so that one step is always in flight. The time it
waits for each batch is the step's `input_seconds`: while the device computes, the host reads
the next batch, so a wait means the input pipeline is slower than the device. A hook
sees, in order:
  before_train(loop)
  finished_step(loop, result)   every step once, in order, once its metrics are on the host
  wants_state(loop, step)       every step, every process, in order: whether it needs the
                                state after `step` (a checkpoint, an evaluation, a save before
                                stopping); the loop then finishes `step` first (all
                                finished_step calls for it are made) and calls
  with_state(loop, step, state) of each hook that asked, in the hooks' order
  after_train(loop)             after the last step finished
A hook that raises stops the run (after what the hooks before it did). A new side action is a
new Hook in the list given to Loop (hooks.make_hooks makes a run's); the loop itself does not
change. What hooks share goes through `loop.record` (RunRecord), never through each other.
"""

import dataclasses
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np


@dataclasses.dataclass
class StepResult:
    """One step's outcome: `metrics` (device scalars), the image ids of this process's batch
    (int64 [b]; -1 marks none), and the metrics as floats once `finish()` has waited."""

    step: int
    metrics: dict
    image_ids: np.ndarray
    input_seconds: float = 0.0  # how long the loop waited for this step's batch
    boxes_cut: int = 0  # ground-truth boxes of this process's batch beyond input.max_boxes
    host: dict | None = None

    def finish(self) -> dict:
        """The metrics as Python floats (waits for the step)."""
        if self.host is None:
            self.host = {k: float(v) for k, v in jax.device_get(self.metrics).items()}
        return self.host


@dataclasses.dataclass
class RunRecord:
    """What the run has done so far, shared by its hooks: each field is written by one hook
    and read by the others (and by the trainer once the loop ends)."""

    last_saved: int | None = None  # the newest checkpoint's step (a resumed run: its start)
    last_checkpoint: str = 'none'  # ... and its folder, for messages
    skipped: int = 0  # non-finite updates skipped (config.skip_nonfinite)
    boxes_cut: int = 0  # ground-truth boxes cut by input.max_boxes, this process's batches
    input_wait_share: float | None = None  # of the last whole log window's time
    first_step_seconds: float | None = None  # from the run's start to its first step's end
    evaluations: dict = dataclasses.field(default_factory=dict)  # {step: metrics}
    eval_seconds: float = 0.0  # the time the evaluations took


class Hook:
    """A side action of the loop (see the module docstring); every method is optional."""

    def before_train(self, loop: 'Loop') -> None:
        pass

    def finished_step(self, loop: 'Loop', result: StepResult) -> None:
        pass

    def wants_state(self, loop: 'Loop', step: int) -> bool:
        return False

    def with_state(self, loop: 'Loop', step: int, state) -> None:
        pass

    def after_train(self, loop: 'Loop') -> None:
        pass


@dataclasses.dataclass
class Loop:
    """train_step(state, global batch) -> (state, metrics); batches: host batches from
    start_step on (a dict with 'image_id'); to_global: host batch -> global arrays."""

    train_step: Callable
    batches: Iterator[dict]
    to_global: Callable
    state: dict
    start_step: int
    total_steps: int
    hooks: list[Hook]
    record: RunRecord = dataclasses.field(default_factory=RunRecord)

    def run(self) -> dict:
        """Runs steps start_step + 1 .. total_steps; returns the final state."""
        for hook in self.hooks:
            hook.before_train(self)
        previous = None
        for step in range(self.start_step + 1, self.total_steps + 1):
            waiting = time.perf_counter()
            batch = next(self.batches)
            waited = time.perf_counter() - waiting
            ids = np.asarray(batch['image_id'])
            cut = int(np.sum(batch.get('num_boxes_truncated', 0)))
            self.state, metrics = self.train_step(self.state, self.to_global(batch))
            current = StepResult(step, metrics, ids, waited, cut)
            if previous is not None:
                self._finish(previous)
            previous = current
            wanting = [hook for hook in self.hooks if hook.wants_state(self, step)]
            if wanting:
                self._finish(current)
                previous = None
                for hook in wanting:
                    hook.with_state(self, step, self.state)
        if previous is not None:
            self._finish(previous)
        for hook in self.hooks:
            hook.after_train(self)
        return self.state

    def _finish(self, result: StepResult) -> None:
        result.finish()
        for hook in self.hooks:
            hook.finished_step(self, result)
