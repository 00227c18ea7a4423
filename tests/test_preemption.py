"""SIGTERM / SIGINT while training: a flag read after the step in flight (one process), the
exit status a scheduler expects, a second signal ignored, the handlers given back. The whole
path (train.py saving the step reached and resuming exactly) is in tests/test_train.py."""

import os
import signal

import pytest

from retinanet_jax.training.preemption import Preempted, PreemptionWatcher


def test_a_signal_is_a_flag_read_after_the_step_a_repeat_is_ignored_ctrl_c_twice_stops(capsys):
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionWatcher() as watcher:
        assert not watcher.distributed and not watcher.reached(7)
        os.kill(os.getpid(), signal.SIGTERM)  # handled in this (main) thread: no exit
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's repeat, during the save: ignored
        assert watcher.reached(8) and watcher.signal_name == 'SIGTERM'
        assert watcher.reached(8)  # said once
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C on top: stop now
            os.kill(os.getpid(), signal.SIGINT)
    assert capsys.readouterr().err.splitlines() == [
        'SIGTERM received: saving step 8, then stopping (Ctrl-C again stops at once)'
    ]
    assert signal.getsignal(signal.SIGTERM) is before  # given back


def test_sigint_too_and_the_exit_status_is_128_plus_the_signal():
    with PreemptionWatcher() as watcher:
        os.kill(os.getpid(), signal.SIGINT)
        assert watcher.reached(1) and watcher.signal_name == 'SIGINT'
    assert Preempted(5, 'SIGTERM', '/run/checkpoints/5').exit_code == 143
    stopped = Preempted(5, 'SIGINT', '/run/checkpoints/5')
    assert stopped.exit_code == 130
    assert str(stopped) == (
        'SIGINT received: saved step 5 to /run/checkpoints/5; run the same command to resume '
        '(exit status 130)'
    )
