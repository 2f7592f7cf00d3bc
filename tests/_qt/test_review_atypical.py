"""Atypical mitotic figures in the dock: p_atypical from its detection runs, counts, T, the double frame, legend."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

pytestmark = pytest.mark.gui


def test_the_docks_detection_gives_every_mitotic_figure_p_atypical_and_the_models_call(review):
    from midog_viewer.atypical import shared_classifier

    viewer, widget = review
    widget.detect_whole(wait=True)
    t = widget.session.table
    figures = (t.kind == "detection") & (t.label == "mitotic figure")
    assert figures.any() and np.all((t.p_atypical[figures] >= 0) & (t.p_atypical[figures] <= 1))
    threshold = shared_classifier().config.threshold
    assert t.atypical[figures].tolist() == (t.p_atypical[figures] >= threshold).astype(int).tolist()
    stored = widget.session.store.objects(widget.session.slide_id)
    assert np.allclose(np.sort(stored.p_atypical[stored.kind == "detection"]), np.sort(t.p_atypical[figures]))


def test_the_counts_panel_shows_atypical_mitoses(review, qtbot):
    viewer, widget = review
    widget.detect_whole(wait=True)
    t = widget.session.table
    keys = [int(k) for k in widget.session.keys[(t.kind == "detection") & (t.label == "mitotic figure")]]
    for key in keys:
        widget.session.decide(key, "accept")
    expected = int((widget.session.table.atypical[[widget.session.row_of(k) for k in keys]] == 1).sum())
    widget.update_counts(wait=True)
    assert widget.counts_panel.cells[("image", "atypical")].text() == str(expected)
    assert widget.counts_panel.atypical.text().startswith(f"Atypical: {expected} of {len(keys)} mitoses")


def _press(viewer, key, modifier=Qt.NoModifier):
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, key, modifier)


def _frames(widget):
    """Centres of the atypical outer frames drawn, rounded."""
    return {tuple(np.round(p, 1)) for p in np.asarray(widget.overlay.atypical.data)}


def test_t_toggles_atypical_on_the_selected_box_logged_undoable_and_drawn_double(review):
    viewer, widget = review
    widget.detect_whole(wait=True)
    _press(viewer, Qt.Key_T)  # nothing selected: it says why
    assert widget.status.text().startswith("Nothing selected to mark atypical")
    _press(viewer, Qt.Key_N)
    key = widget.selected
    row = widget.session.row_of(key)
    before = int(widget.session.table.atypical[row])
    box = widget.session.table.boxes[row]
    centre = (round((box[1] + box[3]) / 2, 1), round((box[0] + box[2]) / 2, 1))  # napari points are (y, x)
    assert (centre in _frames(widget)) == (before == 1)
    _press(viewer, Qt.Key_T)
    after = int(widget.session.table.atypical[row])
    assert after == (0 if before == 1 else 1) and widget.status.text().startswith("Marked")
    assert (centre in _frames(widget)) == (after == 1)
    (decision,) = [d for d in widget.session.store.decisions(widget.session.slide_id) if d.verdict.value == "subtype"]
    assert decision.object_id == key and decision.label == ("atypical" if after else "normal")
    frame = np.flatnonzero([tuple(np.round(p, 1)) == centre for p in np.asarray(widget.overlay.atypical.data)])
    if after == 1:  # the outer frame keeps the box's colour: yellow for a pending prediction
        assert tuple(np.round(widget.overlay.atypical.border_color[frame[0]], 2)) == (1.0, 1.0, 0.0, 1.0)
    _press(viewer, Qt.Key_Z, Qt.ControlModifier)
    assert int(widget.session.table.atypical[row]) == before and (centre in _frames(widget)) == (before == 1)
    stored = widget.session.store.objects(widget.session.slide_id)
    assert int(stored.atypical[(stored.kind == "detection") & (stored.id == key)][0]) == before


def test_the_legend_names_the_atypical_frame(review):
    viewer, widget = review
    assert "atypical mitotic figure" in widget.legend.atypical.text()
