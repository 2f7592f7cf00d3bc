"""The review dock's parts: one detection path (``wait=True`` waits on the worker), views that follow the session."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.gui


def test_detect_and_wait_runs_in_the_worker_thread_and_returns_when_it_is_done(review):
    viewer, widget = review
    threads = []
    real = widget.detector.iter_detect

    def recording(slide, region, cancel=None, tile_filter=None):
        threads.append(threading.current_thread())
        yield from real(slide, region, cancel, tile_filter)

    widget.detector.iter_detect = recording
    widget.detect_whole(wait=True)
    assert threads and threads[0] is not threading.main_thread()  # the same worker path as the button
    assert widget.worker is None and widget.status.text() == "Detection done."
    assert len(widget.overlay.predictions) == len(widget.detector.boxes)


def test_the_overlay_and_counts_follow_changes_made_through_the_session(review, qtbot):
    viewer, widget = review
    widget.detect_whole(wait=True)
    key = int(widget.session.keys[widget.session.table.kind == "detection"][0])
    widget.session.decide(key, "reject")  # not through the dock: the overlay follows the session's event
    layer = widget.overlay.layer_of(key)
    assert tuple(layer.layer.border_color[layer.row_of(key)]) == (1.0, 0.0, 0.0, 1.0)
    qtbot.waitUntil(lambda: widget.counts_panel.cells[("image", "rejected")].text() == "1", timeout=10_000)
    widget.session.mark_hpf((0.0, 0.0, 200.0, 100.0))
    assert len(widget.hpf_layers.fields.data) == 1  # the marked-HPF layer redraws from the session's event
