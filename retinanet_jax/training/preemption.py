"""Preemption: a scheduler's SIGTERM (or a user's SIGINT) ends a training run at a step that
every process agrees on, after a checkpoint of that step, instead of killing it mid-step.

  watcher = PreemptionWatcher()        # installs the signal handlers (restored by close())
  ...
  if watcher.reached(step):            # after each step, on every process
      save a checkpoint of `step`; raise Preempted(step, watcher.signal_name)

One process (no jax.distributed): SIGTERM and SIGINT set a flag that `reached` reads; the step
in flight finishes first. Several processes (jax.distributed initialised, its preemption
service on by default): JAX's preemption sync manager hears SIGTERM on any host, and
`multihost_utils.reached_preemption_sync_point(step)` turns True on every host at the same
step (the largest step any host had reached, plus one), so that all save the same step. A
SIGINT there is turned into a SIGTERM of this process, so that it goes through the same sync.
A repeated SIGTERM while the checkpoint is written is ignored (schedulers repeat it); a second
SIGINT (Ctrl-C twice) stops at once with KeyboardInterrupt. Either way nothing is corrupted:
orbax writes atomically, so even a SIGKILL mid-save leaves no half-written checkpoint to read.

`Preempted.exit_code` is 128 + the signal number (143 for SIGTERM, 130 for SIGINT), what a
scheduler reads as an interrupted job; train.py exits with it.
"""

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A run stopped by a signal after saving the checkpoint of `step`."""

    def __init__(self, step: int, signal_name: str, checkpoint: str):
        self.step, self.signal_name, self.checkpoint = step, signal_name, checkpoint
        self.exit_code = 128 + signal.Signals[signal_name].value
        super().__init__(
            f'{signal_name} received: saved step {step} to {checkpoint}; run the same command '
            f'to resume (exit status {self.exit_code})'
        )


class PreemptionWatcher:
    """Watches for SIGTERM / SIGINT from construction to `close()` (a context manager too).
    Signal handlers can only be installed from the main thread: elsewhere it watches nothing
    (a run started from a worker thread then stops as the signal's default says)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._said, self._repeats = False, 0
        self.distributed = jax.distributed.is_initialized()
        self._previous = {}
        if not _main_thread():
            return
        for sig in SIGNALS:
            if self.distributed and sig == signal.SIGTERM:
                continue  # JAX's preemption notifier owns SIGTERM
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        # Only flags here: printing from a signal handler can re-enter a stderr write (tqdm's)
        # and fail; `reached` says it.
        del frame
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
            if self.distributed:  # every host hears of it through JAX's preemption sync
                os.kill(os.getpid(), signal.SIGTERM)
        elif signum == signal.SIGINT:  # Ctrl-C twice: stop now (checkpoints are atomic)
            raise KeyboardInterrupt
        else:
            self._repeats += 1  # a scheduler may repeat SIGTERM: the save goes on

    def reached(self, step: int) -> bool:
        """Whether to save `step` and stop; call it after every step, on every process."""
        if self.distributed:
            reached = multihost_utils.reached_preemption_sync_point(step)
            if reached:
                self.signal_name = self.signal_name or 'SIGTERM'
        else:
            reached = self.signal_name is not None
        if reached and not self._said:
            self._said = True
            print(
                f'{self.signal_name} received: saving step {step}, then stopping (Ctrl-C again '
                'stops at once)',
                file=sys.stderr,
                flush=True,
            )
        return reached

    def close(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def __enter__(self) -> 'PreemptionWatcher':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
