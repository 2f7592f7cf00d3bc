"""Atypical mitotic figures in the dock: p_atypical from the dock's detection runs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import add_slide_layer

from midog_viewer._qt.review_widget import ReviewWidget

pytestmark = pytest.mark.gui


@pytest.fixture()
def review(make_napari_viewer, small_hpf, stand_in, review_store, qtbot):
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    add_slide_layer(viewer, *small_hpf)
    return viewer, widget


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
