"""Issue 12's traps in the dock: what shows before anything is computed, napari's own Delete, warnings on every
decision, the first window's size, and bad input (a 16-bit TIFF, no image, the image closed mid-run)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import add_slide_layer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from midog_viewer._qt.review_widget import ReviewWidget

pytestmark = pytest.mark.gui


@pytest.fixture()
def review(make_napari_viewer, small_hpf, stand_in, review_store, qtbot):
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    add_slide_layer(viewer, *small_hpf)
    return viewer, widget


def _press(viewer, key, modifier=Qt.NoModifier):
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, key, modifier)


def test_a_decision_in_the_dock_napari_made_prints_no_warning(make_napari_viewer, small_hpf, tmp_path, monkeypatch):
    """napari hands a plugin's dock a proxy of the viewer; reaching a private attribute through it warns
    (FutureWarning) on every recolour, i.e. every decision."""
    monkeypatch.setenv("MIDOG_VIEWER_DB", str(tmp_path / "reviews.sqlite"))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("midog-viewer", "Mitosis review")
    add_slide_layer(viewer, *small_hpf)
    run = widget.session.start_run("stand-in", {})
    widget.session.add_detections(run, np.array([[100, 100, 150, 150], [300, 300, 350, 350]], float),
                                  np.array([0.99, 0.99]), ["mitotic figure", "mitotic figure"])
    _press(viewer, Qt.Key_N)
    with warnings.catch_warnings(record=True) as caught:  # not "error": raising inside Qt's key event crashes
        warnings.simplefilter("always")
        _press(viewer, Qt.Key_A)
        _press(viewer, Qt.Key_N)
        _press(viewer, Qt.Key_R)
        _press(viewer, Qt.Key_Z, Qt.ControlModifier)
    assert [str(w.message) for w in caught] == []
    table = widget.session.store.objects(widget.session.slide_id)
    assert sorted(table.status[table.kind == "detection"]) == ["accepted", "pending"]
    from midog_viewer._qt.overlay import _drawn_by

    assert _drawn_by(widget.overlay.predictions.layer) is not None  # the fast recolour path is still found
