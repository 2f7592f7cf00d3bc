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
