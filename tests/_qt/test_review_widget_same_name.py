"""The dock exports the slide it shows (even beside a same-named one) and says when an undo finds nothing."""

from __future__ import annotations

import csv
import shutil

import pytest
from conftest import add_slide_layer

from midog_viewer._qt.review_widget import ReviewWidget

pytestmark = pytest.mark.gui


def test_export_on_b_writes_bs_objects_not_those_of_the_same_named_slide_a(
    make_napari_viewer, small_hpf, stand_in, review_store, qtbot, tmp_path
):
    path, hpf = small_hpf
    a, b = tmp_path / "a" / path.name, tmp_path / "b" / path.name
    for copy in (a, b):
        copy.parent.mkdir()
        shutil.copy(path, copy)
    other = review_store.add_slide(a, 0.25, 1024, 768)  # id 1: what a lookup by file name finds first
    review_store.add_annotation(other, (10, 10, 60, 60), "mitotic figure")
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    add_slide_layer(viewer, b, hpf)
    assert widget.session.slide_id != other
    out = widget.export("csv", tmp_path / "b.csv")
    with open(out, newline="") as handle:
        written = sorted((row["kind"], int(row["id"])) for row in csv.DictReader(handle))
    table = review_store.objects(widget.session.slide_id)
    assert written == sorted(zip(table.kind.tolist(), table.id.tolist())) and len(written) == len(hpf.boxes)


def test_ctrl_z_with_nothing_of_the_reviewers_says_so_in_the_status_line(make_napari_viewer, small_hpf, stand_in,
                                                                          review_store, qtbot):
    path, hpf = small_hpf
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    add_slide_layer(viewer, path, hpf)
    widget.undo()
    assert widget.status.text() == "Nothing of yours (tester) to undo on this slide."
    widget.redo()
    assert widget.status.text() == "Nothing of yours (tester) to redo on this slide."
