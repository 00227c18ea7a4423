"""The training loop's order of calls and its hooks, with a plain-Python step (no JAX)."""

import math

import numpy as np
import pytest

from retinanet_jax.training import hooks
from retinanet_jax.training.loop import Hook, Loop


def fake_step(state, batch):
    """state = steps done; loss = batch value (nan where the batch says so)."""
    loss = batch['value']
    metrics = {'loss': np.float32(loss), 'grad_norm': np.float32(1.0)}
    return state + 1, metrics


def batches(values):
    for i, v in enumerate(values):
        yield {'value': v, 'image_id': np.array([10 * i, 10 * i + 1, -1])}


class Recorder(Hook):
    """A side action added to the loop without changing it: every call, in order."""

    def __init__(self, want_at=()):
        self.calls, self.want_at = [], set(want_at)

    def before_train(self, loop):
        self.calls.append('before')

    def finished_step(self, loop, result):
        self.calls.append(('finished', result.step, result.host['loss']))

    def wants_state(self, loop, step):
        self.calls.append(('wants', step))
        return step in self.want_at

    def with_state(self, loop, step, state):
        self.calls.append(('state', step, state))

    def after_train(self, loop):
        self.calls.append('after')


def test_a_new_hook_sees_every_step_in_order_with_one_step_in_flight():
    recorder = Recorder(want_at={2})
    loop = Loop(fake_step, batches([1.0, 2.0, 3.0, 4.0]), lambda b: b, 0, 0, 4, [recorder])
    assert loop.run() == 4
    assert recorder.calls == [
        'before',
        ('wants', 1),
        ('finished', 1, 1.0),  # step 1 finishes once step 2 is dispatched
        ('wants', 2),
        ('finished', 2, 2.0),  # asked for the state: step 2 finishes first
        ('state', 2, 2),
        ('wants', 3),
        ('finished', 3, 3.0),
        ('wants', 4),
        ('finished', 4, 4.0),  # the last step finishes after the loop
        'after',
    ]


def test_a_resumed_loop_starts_after_its_step():
    recorder = Recorder()
    Loop(fake_step, batches([5.0, 6.0]), lambda b: b, 3, 3, 5, [recorder]).run()
    finished = [c[1] for c in recorder.calls if c[0] == 'finished']
    assert finished == [4, 5]


def test_non_finite_step_stops_naming_step_images_files_and_last_checkpoint():
    guard = hooks.NonFiniteGuard(0, lambda ids: f' (files {ids})')
    loop = Loop(fake_step, batches([1.0, 2.0, math.nan, 4.0]), lambda b: b, 0, 0, 4, [guard])
    loop.record.last_saved, loop.record.last_checkpoint = 2, 'ckpt/2'  # as a Checkpointer does
    with pytest.raises(FloatingPointError) as error:
        loop.run()
    message = str(error.value)
    assert 'non-finite loss nan' in message and 'at step 3' in message
    assert 'images [20, 21] (files [20, 21])' in message  # the padding id -1 left out
    assert 'the last good checkpoint: ckpt/2' in message and 'skip_nonfinite' in message


def test_skipped_steps_are_counted_and_too_many_in_a_row_stop(capsys):
    def skipping_step(state, batch):
        state, metrics = fake_step(state, batch)
        metrics['skipped'] = np.float32(not math.isfinite(batch['value']))
        return state, metrics

    guard = hooks.NonFiniteGuard(2)
    values = [1.0, math.nan, 2.0, math.nan, math.nan, 3.0]
    Loop(skipping_step, batches(values), lambda b: b, 0, 0, 6, [guard]).run()
    assert guard.skipped == 3 and guard.in_a_row == 0
    assert capsys.readouterr().err.count('update skipped') == 3
    guard = hooks.NonFiniteGuard(2)
    with pytest.raises(FloatingPointError, match=r'at step 4, .*3 non-finite steps in a row'):
        Loop(
            skipping_step,
            batches([1.0, math.nan, math.nan, math.nan, 1.0]),
            lambda b: b,
            0,
            0,
            5,
            [guard],
        ).run()


def test_periodic_actions_are_due_every_n_and_last():
    assert [s for s in range(1, 11) if hooks.is_due(s, 4, 10)] == [4, 8, 10]


def test_the_wait_for_input_is_measured_shown_and_warned_about_once(capsys):
    """A pipeline slower than the step: each step's input_seconds is the time spent in
    next(batches); InputWait reports the share of each log window (the first step, which
    starts the pipeline, left out) and warns once, naming the knob."""
    import time

    def slow(values, seconds):
        for b in batches(values):
            time.sleep(seconds)
            yield b

    def compute(state, batch):  # a step that takes 10 ms on the host, the input 30 ms
        time.sleep(0.01)
        return fake_step(state, batch)

    waits = hooks.InputWait(log_every=2)
    seen = []

    class Seen(Hook):
        def finished_step(self, loop, result):
            seen.append((result.step, result.input_seconds, waits.share))

    loop = Loop(compute, slow([1.0] * 7, 0.03), lambda b: b, 0, 0, 7, [waits, Seen()])
    loop.run()
    assert [s for s, _, _ in seen] == list(range(1, 8))
    assert all(0.025 < wait < 0.2 for _, wait, _ in seen)
    assert seen[2][2] is None and 0.5 < waits.share <= 1.0  # ~30 of every ~40 ms
    assert next(s for s, _, share in seen if share is not None) == 4  # the first whole window
    err = capsys.readouterr()
    text = err.out + err.err
    assert text.count('waited for their batches') == 1 and '--config.data.read_threads' in text

    fast = hooks.InputWait(log_every=2)  # batches at once: no share to speak of, no warning
    Loop(compute, batches([1.0] * 7), lambda b: b, 0, 0, 7, [fast]).run()
    assert fast.share < 0.1 and not fast.warned


def test_boxes_cut_by_max_boxes_are_counted_written_and_warned_about_once(capsys):
    """The pipeline's num_boxes_truncated of each batch reaches StepResult.boxes_cut; CutBoxes
    sums them into the record, MetricLogger writes the running total, one warning names the
    knob; a run that cuts nothing says nothing."""
    cut_per_step = [0, 2, 0, 3, 1]

    def cutting(values):
        for b, cut in zip(batches(values), cut_per_step, strict=True):
            yield {**b, 'num_boxes_truncated': np.array([cut, 0, 0], np.int32)}

    class Writer:
        def __init__(self):
            self.rows = []

        def write(self, step, metrics):
            self.rows.append((step, metrics['boxes_cut']))

    writer = Writer()
    run = [hooks.CutBoxes(max_boxes=16), hooks.MetricLogger(writer, log_every=2, batch_size=3)]
    loop = Loop(fake_step, cutting([1.0] * 5), lambda b: b, 0, 0, 5, run)
    loop.run()
    assert loop.record.boxes_cut == 6
    assert writer.rows == [(2, 2), (4, 5), (5, 6)]
    err = capsys.readouterr()
    text = err.out + err.err
    assert text.count('warning: 2 ground-truth box(es) of step 2') == 1
    assert text.count('input.max_boxes=16') == 1 and '--config.input.max_boxes' in text
    quiet = hooks.CutBoxes(max_boxes=16)
    Loop(fake_step, batches([1.0] * 3), lambda b: b, 0, 0, 3, [quiet]).run()
    assert not quiet.warned
    assert 'max_boxes' not in capsys.readouterr().out


def test_a_runs_hooks_come_from_one_list_and_hold_no_other_hook(tmp_path):
    """hooks.make_hooks is the one list of a run's hooks, in its documented order; no hook holds
    another (what they share goes through loop.record)."""
    import types

    from configs import smoke
    from retinanet_jax import settings as settings_lib

    config = smoke.get_config()
    config.skip_nonfinite = 0  # a non-finite step stops the run
    settings = settings_lib.from_config(config)
    manager = types.SimpleNamespace(directory=str(tmp_path / 'checkpoints'))
    evaluate = types.SimpleNamespace(pictures=lambda state: {})
    watcher = types.SimpleNamespace(reached=lambda step: False)
    run = hooks.make_hooks(settings, tmp_path, manager, {}, evaluate, watcher, 0.0, None, None)
    names = [type(h).__name__ for h in run]
    assert names == [
        'NonFiniteGuard',
        'InputWait',
        'CutBoxes',
        'Progress',
        'MetricLogger',
        'Checkpointer',
        'PreemptionHook',
        'Evaluator',
    ]
    for hook in run:
        held = [v for v in vars(hook).values() if isinstance(v, Hook)]
        assert not held, (hook, held)
    # one hook's news reaches another through the record: a resumed run's start is the last
    # good checkpoint that the non-finite guard names
    loop = Loop(fake_step, batches([math.nan]), lambda b: b, 3, 3, 4, [run[0], run[5]])
    with pytest.raises(FloatingPointError, match=r'the last good checkpoint: .*checkpoints/3'):
        loop.run()
