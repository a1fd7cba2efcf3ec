"""A Ctrl-C that lands where Python swallows it (a __del__) still stops a job at its next check."""

import os
import signal
import time

import pytest

from musilingo_cli.core.interrupts import sticky_interrupt


class _InterruptedWhileCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the handler runs here, inside __del__: Python prints "Exception ignored" and goes on


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed interrupt
def test_an_interrupt_swallowed_in_a_destructor_is_raised_at_the_next_check():
    before = signal.getsignal(signal.SIGINT)
    with sticky_interrupt() as check:
        check()  # nothing yet
        victim = _InterruptedWhileCollected()
        del victim  # the KeyboardInterrupt is lost here
        with pytest.raises(KeyboardInterrupt):
            check()
    assert signal.getsignal(signal.SIGINT) is before


def test_an_interrupt_still_raises_at_once():
    with sticky_interrupt() as check, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    with pytest.raises(KeyboardInterrupt):
        check()
