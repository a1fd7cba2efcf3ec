"""Ctrl-C that always stops a long job.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. If that
is inside a `__del__` method or a weakref callback, Python prints "Exception ignored in ..." and goes
on, so the job would run to its end as if nothing had been pressed. `sticky_interrupt` records the
signal as well, and its `check()` raises KeyboardInterrupt again at the job's next safe point (ask
calls it after each record it writes).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def sticky_interrupt() -> Iterator[Callable[[], None]]:
    """Within the block, SIGINT raises KeyboardInterrupt as usual and is also remembered; the yielded
    `check()` raises KeyboardInterrupt once one has arrived. Off the main thread (where signal
    handlers cannot be set) `check()` does nothing. The previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    seen = threading.Event()

    def on_sigint(signum, frame):
        seen.set()
        raise KeyboardInterrupt

    def check() -> None:
        if seen.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
