"""A minimal, Qt-free event: what the review session announces so its views (overlay, counts) can follow.

The session changes the store and then emits; subscribers (the dock's overlay and counts controller) are
called at once, in the thread that made the change, in the order they connected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class Event:
    """A list of callbacks called with one value each time the event is emitted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callable] = []

    def connect(self, callback: Callable) -> Callable:
        """Call ``callback(value)`` on every emit; returns it (usable as a decorator)."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable | None = None) -> None:
        """Stop calling ``callback`` (all callbacks when None); unknown callbacks are ignored."""
        if callback is None:
            self._callbacks.clear()
        elif callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, value=None) -> None:
        for callback in list(self._callbacks):
            callback(value)


@dataclass(frozen=True)
class ObjectsChanged:
    """What changed among a slide's objects: ``keys`` whose status or label changed, ``added`` keys of new rows,
    or ``reloaded`` (every row may have changed: read the whole table again)."""

    keys: tuple[int, ...] = ()
    added: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reloaded: bool = False


class SessionEvents:
    """The events of a :class:`~midog_viewer.review.session.ReviewSession`.

    ``objects_changed`` carries an :class:`ObjectsChanged`; ``hpfs_changed`` carries the slide's marked HPFs
    (a list of :class:`~midog_viewer.review.store.HPFRegion`) after a change.
    """

    def __init__(self) -> None:
        self.objects_changed = Event("objects_changed")
        self.hpfs_changed = Event("hpfs_changed")

    def disconnect_all(self) -> None:
        """Drop every subscriber (the dock unbinding a slide)."""
        self.objects_changed.disconnect()
        self.hpfs_changed.disconnect()
