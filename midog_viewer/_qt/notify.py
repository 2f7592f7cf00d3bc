"""napari notifications for the review dock, looked up here at call time (so tests can catch them in one place),
and the decorator that turns bad input in a handler into one of them."""

from __future__ import annotations

import functools

from napari.utils.notifications import show_error, show_info, show_warning

from midog_viewer.errors import MidogError

__all__ = ["NO_SLIDE", "reports_errors", "show_error", "show_info", "show_warning"]

#: What a key or button says when no slide is open.
NO_SLIDE = "Open a slide or the synthetic sample first (File ▸ Open, or File ▸ Open Sample ▸ midog-viewer)."


def reports_errors(method):
    """Turn bad input (:class:`MidogError`) in a handler into one napari notification."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except MidogError as exc:
            globals()["show_error"](str(exc))
            return None

    return wrapper
