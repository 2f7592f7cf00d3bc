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


def test_no_mitotic_score_and_no_f1_before_any_detection(review):
    viewer, widget = review  # the sample's ground truth is there, nothing was detected yet
    widget.update_counts(wait=True)
    score, f1 = widget.counts_panel.score.text(), widget.counts_panel.f1.text()
    assert not any(c.isdigit() for c in score) and "no detection" in score, score
    assert f1 == ""
    assert widget.counts_panel.cells[("image", "ground_truth")].text() != "–"  # what is known is still shown
    widget.detect_whole(wait=True)
    widget.update_counts(wait=True)
    assert "Mitotic score " in widget.counts_panel.score.text() and "F1 " in widget.counts_panel.f1.text()


def test_a_marked_hpf_partly_outside_the_image_counts_only_its_part_inside(review):
    viewer, widget = review
    widget.detect_whole(wait=True)
    session = widget.session
    session.replace_hpfs([(-500.0, -400.0, 1000.0, 800.0)])  # a quarter of it lies on the 1024 × 768 image
    field = session.counts(None, use_drawn=True).fields[0]
    assert field.area_mm2 == pytest.approx(500 * 400 * session.mpp ** 2 / 1e6)
    inside = (session.table.x1 + session.table.x2) / 2 < 500
    assert field.mitoses <= int(inside.sum())


def test_napari_select_and_delete_on_a_box_is_taken_back_and_says_why(review, qtbot):
    viewer, widget = review
    widget.detect_whole(wait=True)
    predictions = widget.overlay.predictions
    before = len(predictions)
    layer = predictions.layer
    viewer.layers.selection.active = layer
    layer.mode = "select"
    layer.selected_data = {0}
    key = int(predictions.ids[0])
    _press(viewer, Qt.Key_Delete)  # napari's own binding: Points.remove_selected
    assert "R to reject" in widget.status.text()
    qtbot.waitUntil(lambda: len(layer.data) == before, timeout=5_000)
    assert len(layer.data) == before and predictions.row_of(key) is not None  # back on screen
    table = widget.session.store.objects(widget.session.slide_id)
    assert table.status[(table.kind == "detection") & (table.id == key)][0] == "pending"  # the store never changed
    layer.mode = "pan_zoom"
    _press(viewer, Qt.Key_Space)  # and the review keys still work on it
    assert widget.selected is not None


def test_deleting_a_whole_box_layer_in_the_layer_list_puts_it_back_and_says_why(review, qtbot):
    """The layer list's trash button on the detections (or marked HPFs) hides objects that still count: the
    layers come back from the store, and the status line says so."""
    viewer, widget = review
    widget.detect_whole(wait=True)
    widget.mark_current_hpf()
    drawn = len(widget.overlay.predictions)
    counted = widget.session.pending_mask(widget.score_threshold).sum()
    name = widget.overlay.predictions.layer.name
    viewer.layers.remove(widget.overlay.predictions.layer)  # what the trash button does
    qtbot.waitUntil(lambda: name in [layer.name for layer in viewer.layers], timeout=5_000)
    assert len(widget.overlay.predictions) == drawn and "was put back" in widget.status.text()
    assert widget.session.pending_mask(widget.score_threshold).sum() == counted  # the store never changed
    fields = widget.hpf_layers.fields
    viewer.layers.remove(fields)
    qtbot.waitUntil(lambda: widget.hpf_layers.fields is not fields and widget.hpf_layers.fields in viewer.layers,
                    timeout=5_000)
    assert len(widget.hpf_layers.fields.data) == len(widget.session.hpf_regions()) == 1
    _press(viewer, Qt.Key_Space)  # the new layers have the review keys
    assert widget.selected is not None
    viewer.layers.remove(widget.slide_layer)  # closing the image itself still closes the review
    qtbot.wait(50)
    assert widget.view is None and not [layer for layer in viewer.layers if layer.name == name]


@pytest.mark.parametrize("key", [Qt.Key_A, Qt.Key_R, Qt.Key_H])
def test_review_keys_with_nothing_selected_say_why(review, key):
    viewer, widget = review
    widget.detect_whole(wait=True)
    widget.select(None)
    widget.status.setText("")
    _press(viewer, key)
    assert widget.status.text().startswith("Nothing selected to ")


def test_a_16_bit_tiff_opened_with_our_reader_says_why_in_one_line(make_napari_viewer, tmp_path, monkeypatch):
    import tifffile

    shown = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", shown.append)
    path = tmp_path / "u16.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint16), photometric="rgb")
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="midog-viewer")  # napari's own message would be an exception: "refused the file"
    assert len(viewer.layers) == 0
    assert len(shown) == 1 and "u16.tif" in shown[0] and "8-bit" in shown[0] and "\n" not in shown[0]


def test_buttons_clicked_with_no_image_say_open_a_slide_first(make_napari_viewer, review_store, stand_in, qtbot,
                                                               monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8))  # an image, but not a slide opened by our reader
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    infos, errors = [], []
    monkeypatch.setattr("midog_viewer._qt.notify.show_info", infos.append)
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", errors.append)
    for button in (widget.detect_view_button, widget.detect_all_button, widget.counts_panel.mark_hpf):
        QTest.mouseClick(button, Qt.LeftButton)
    assert errors == [] and len(infos) == 3 and all(text.startswith("Open a slide") for text in infos)
    assert widget.detector.calls == []


def test_closing_the_image_during_detection_leaves_a_clean_dock(review, qtbot, monkeypatch):
    viewer, widget = review
    errors = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", errors.append)
    real = widget.detector.iter_detect

    def slow(slide, region, cancel=None, tile_filter=None):
        yield from real(slide, (0, 0, 512, 768), cancel)  # the left half: one batch with boxes, one without
        cancel.wait(10)  # a long last batch: the image is closed meanwhile

    widget.detector.iter_detect = slow
    widget.detect_whole()
    qtbot.waitUntil(lambda: widget.progress.value() == 2, timeout=10_000)
    viewer.layers.remove(widget.slide_layer)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert errors == []
    assert (widget.progress.value(), widget.progress.maximum()) == (0, 1)  # not left busy or at 5 %
    assert widget.session is None and widget.overlay is None and widget.selected is None
    assert widget.detect_all_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.load_button.isEnabled()
    assert "closed" in widget.status.text()
    assert [layer.name for layer in viewer.layers] == []  # our box and HPF layers went with it
    assert widget.counts_panel.cells[("image", "pending")].text() == "–"


def test_the_first_window_fills_the_screen_and_the_docks_fit_it(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    from qtpy.QtWidgets import QApplication, QLabel

    from midog_viewer._qt.viewer import fit_to_screen, review_dock

    monkeypatch.setenv("MIDOG_VIEWER_DB", str(tmp_path / "reviews.sqlite"))
    viewer = make_napari_viewer(show=True)  # what open_viewer does (it is checked in test_napari_reader.py)
    viewer.open_sample("midog-viewer", "synthetic-hpf")
    viewer.window.add_plugin_dock_widget("midog-viewer", "Mitosis review")
    fit_to_screen(viewer)
    qtbot.wait(100)
    screen = QApplication.primaryScreen().availableGeometry()
    left, top, width, height = viewer.window.geometry()
    assert width <= screen.width() and height <= screen.height()
    assert width >= 0.9 * screen.width() and height >= 0.9 * screen.height()  # not napari's 1090 × 815
    canvas_h, canvas_w = viewer.canvas.size
    assert canvas_w >= 0.5 * width and canvas_h >= 0.5 * height  # the slide has most of the window
    dock = review_dock(viewer)
    cut = [label.text() for label in dock.counts_panel.findChildren(QLabel)
           if label.isVisible() and not label.wordWrap() and label.width() < label.sizeHint().width()]
    assert cut == []  # every counts-table label shows its whole text
    viewer.window.add_plugin_dock_widget("midog-viewer", "Train the detector")
    qtbot.wait(100)
    assert viewer.window.geometry()[3] <= screen.height()  # the training panel scrolls instead
