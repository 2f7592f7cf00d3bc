"""Ctrl-C and SIGTERM as a request to stop: long commands (training runs) finish the current step and save."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class StopFlag:
    """Set by SIGTERM/SIGINT; a training loop checks it between steps and saves before leaving."""

    def __init__(self) -> None:
        self.stopped = False

    def set(self, signum: int, frame: object) -> None:
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """A :class:`StopFlag` that SIGTERM and SIGINT set while the block runs; the old handlers come back after."""
    stop = StopFlag()
    previous = {sig: signal.signal(sig, stop.set) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
