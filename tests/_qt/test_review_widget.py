"""The review dock in a real napari viewer under Xvfb: detect, judge by key, undo, counts, export, import."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import add_slide_layer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from midog_viewer._qt.review_widget import ReviewWidget

pytestmark = pytest.mark.gui

YELLOW, WHITE, RED = (1.0, 1.0, 0.0, 1.0), (1.0, 1.0, 1.0, 1.0), (1.0, 0.0, 0.0, 1.0)


def _press(viewer, key, modifier=Qt.NoModifier):
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, key, modifier)


def _colour_of(widget, key):
    layer = widget.overlay.layer_of(key)
    return tuple(np.round(layer.layer.border_color[layer.row_of(key)], 3))


def test_detecting_the_whole_image_draws_and_stores_every_box(review):
    viewer, widget = review
    widget.detect_whole(wait=True)
    table = widget.session.store.objects(widget.session.slide_id)
    detections = table.select(table.kind == "detection")
    assert len(detections) == len(widget.detector.boxes)
    assert len(widget.overlay.predictions) == len(detections)
    assert set(widget.overlay.predictions.layer.features["status"]) == {"pending"}
    assert widget.progress.value() == 2 and widget.detect_view_button.isEnabled()


def test_keys_accept_reject_undo_and_redo_change_store_and_colours(review):
    viewer, widget = review
    widget.detect_whole(wait=True)
    _press(viewer, Qt.Key_N)
    first = widget.selected
    assert first is not None and _colour_of(widget, first) == YELLOW
    _press(viewer, Qt.Key_A)
    stored = widget.session.store.objects(widget.session.slide_id)
    assert stored.status[(stored.kind == "detection") & (stored.id == first)][0] == "accepted"
    assert _colour_of(widget, first) == WHITE
    _press(viewer, Qt.Key_Space)
    second = widget.selected
    assert second != first
    _press(viewer, Qt.Key_R)
    assert _colour_of(widget, second) == RED
    _press(viewer, Qt.Key_Z, Qt.ControlModifier)
    assert _colour_of(widget, second) == YELLOW
    _press(viewer, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert _colour_of(widget, second) == RED
    verdicts = [d.verdict.value for d in widget.session.store.decisions(widget.session.slide_id)]
    assert verdicts == ["accept", "reject", "undo", "redo"]
    _press(viewer, Qt.Key_P)
    assert widget.selected not in (first, second)  # previous pending skips the decided ones


def test_counts_follow_decisions_and_the_slide_reopens_as_left(review, make_napari_viewer, small_hpf, stand_in,
                                                               review_store, qtbot):
    viewer, widget = review
    widget.detect_whole(wait=True)
    widget.update_counts(wait=True)
    pending_before = int(widget.counts_panel.cells[("image", "pending")].text())
    widget.step()
    widget.decide("accept")
    widget.step()
    widget.decide("reject")
    cells = widget.counts_panel.cells
    widget.schedule_counts()  # the panel's own path: a timer, then a worker thread
    qtbot.waitUntil(lambda: cells[("image", "rejected")].text() == "1", timeout=10_000)
    widget.update_counts(wait=True)
    assert cells[("image", "accepted")].text() == "1"
    assert cells[("image", "rejected")].text() == "1"
    assert int(cells[("image", "pending")].text()) == pending_before - 2
    assert "Mitotic score" in widget.counts_panel.score.text()
    assert "F1" in widget.counts_panel.f1.text()  # the sample's ground truth gives a live F1

    other = make_napari_viewer()
    reopened = ReviewWidget(other, detector=stand_in, store=review_store)
    qtbot.addWidget(reopened)
    add_slide_layer(other, small_hpf[0], small_hpf[1])
    statuses = list(reopened.overlay.predictions.layer.features["status"])
    assert statuses.count("accepted") == 1 and statuses.count("rejected") == 1


def test_a_click_selects_and_shift_click_adds_a_missed_mitosis(review):
    viewer, widget = review
    widget.detect_whole(wait=True)
    box = widget.session.table.boxes[0]
    widget.add_mitosis_at(20.0, 30.0)
    added = widget.selected
    assert added < 0 and _colour_of(widget, added) == WHITE
    widget.undo()
    assert _colour_of(widget, added) == (0.0, 0.0, 0.0, 0.0)  # its "add" undone: hidden
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    widget.select(None)
    widget.click_at(x, y)
    assert widget.selected == int(widget.session.keys[0])
    widget.click_at(2.0, 760.0)  # empty corner
    assert widget.selected is None


def test_threshold_hides_low_scores_and_visible_region_detects_once(review):
    viewer, widget = review
    viewer.scene.camera.center = (40.0, 20.0)  # µm: level-0 (80, 160)
    viewer.scene.camera.zoom = 8.0  # 2 screen px per level-0 px: a corner of the field
    canvas_h, canvas_w = viewer.canvas.size
    region = widget.visible_region()
    assert region == (0, max(0, int(160 - canvas_h / 4)), int(80 + canvas_w / 4), int(160 + canvas_h / 4) - max(0, int(160 - canvas_h / 4)))
    widget.detect_visible(wait=True)
    widget.detect_visible(wait=True)  # same view, same model: nothing recomputed
    assert len(widget.detector.calls) == 1
    widget.detect_whole(wait=True)
    widget.threshold.setValue(70)
    assert widget.overlay.predictions.layer.features["score"].min() > 0.7
    widget.threshold.setValue(50)
    assert widget.overlay.predictions.layer.features["score"].min() < 0.7


def test_exports_are_written_and_reimport_equal(review, tmp_path, make_napari_viewer, qtbot):
    from midog_viewer.formats.importing import read_file
    from midog_viewer.review.store import ReviewStore

    viewer, widget = review
    widget.detect_whole(wait=True)
    widget.step()
    widget.decide("accept")
    widget.step()
    widget.decide("reject")
    counts = widget.export("counts", tmp_path / "counts.csv")
    assert counts.read_text().splitlines()[0].startswith("slide,hpf_id")
    written = {fmt: widget.export(fmt, tmp_path / name) for fmt, name in
               (("coco", "out.json"), ("sliderunner", "out.sqlite"), ("geojson", "out.geojson"),
                ("csv", "objects.csv"), ("midog-json", "points.json"))}
    assert all(path.is_file() and path.stat().st_size > 0 for path in written.values())
    reviewed = widget.session.store.reviewed_objects(widget.session.slide_id)
    expected = sorted(map(tuple, np.round(reviewed.boxes, 1)))
    for fmt in ("coco", "sliderunner", "geojson"):
        images = read_file(written[fmt], "midog" if fmt == "coco" else fmt, image_name="small_hpf.tiff")
        boxes = sorted(map(tuple, np.round(np.concatenate([np.asarray(i.boxes).reshape(-1, 4) for i in images]), 1)))
        assert boxes == expected, fmt

    # import into a fresh store through the widget: the annotations appear as the white layer
    fresh = ReviewStore(tmp_path / "fresh.sqlite", reviewer="other")
    viewer2 = make_napari_viewer()
    second = ReviewWidget(viewer2, detector=widget.detector, store=fresh)
    qtbot.addWidget(second)
    add_slide_layer(viewer2, widget.slide.path)
    second.import_annotations(written["coco"])
    truth = second.session.table.select(second.session.table.status == "ground truth")
    assert sorted(map(tuple, np.round(truth.boxes, 1))) == expected
    assert len(second.overlay.ground_truth) == len(expected)
    second.close()
    fresh.close()


def test_bad_input_becomes_a_notification_and_leaves_the_widget_usable(review, tmp_path, monkeypatch):
    viewer, widget = review
    shown = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", shown.append)
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    widget.import_annotations(broken)
    widget.use_model(str(tmp_path / "missing.safetensors"))
    assert len(shown) == 2 and all(message.count(".") >= 1 and "\n" not in message for message in shown)
    assert widget.detector is not None and widget.detect_view_button.isEnabled()


def test_a_failing_worker_reenables_the_buttons(review, qtbot, monkeypatch):
    viewer, widget = review
    shown = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", shown.append)

    def explode(slide, region, cancel=None, tile_filter=None):
        yield from ()
        raise RuntimeError("tile read failed")

    monkeypatch.setattr(widget.detector, "iter_detect", explode)
    widget.detect_whole()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert shown and "tile read failed" in shown[0]
    assert widget.detect_all_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_auto_detect_analyses_the_view_once_it_settles(review, qtbot):
    viewer, widget = review
    widget.auto_detect.setChecked(True)
    viewer.scene.camera.center = (60.0, 80.0)
    qtbot.waitUntil(lambda: len(widget.detector.calls) == 1 and widget.worker is None, timeout=10_000)
    assert len(widget.overlay.predictions) > 0


def test_escape_cancels_a_running_detection_and_the_region_stays_to_do(review, qtbot):
    viewer, widget = review
    started = []

    def slow(slide, region, cancel=None, tile_filter=None):
        started.append(region)
        yield from widget.detector.__class__.iter_detect(widget.detector, slide, (0, 0, 10, 10), cancel)
        cancel.wait(10)  # a long batch: only cancelling ends it early
        return

    widget.detector.iter_detect = slow
    widget.detect_whole()
    qtbot.waitUntil(lambda: widget.progress.value() == 2, timeout=10_000)
    _press(viewer, Qt.Key_Escape)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5_000)
    assert widget.status.text() == "Detection cancelled." and widget.detect_all_button.isEnabled()
    assert widget.done_regions.missing(widget._model_key(), (0, 0, 1024, 768), (1024, 768)) is not None


def test_use_this_model_in_the_training_panel_makes_it_the_review_model(review, tmp_path, qtbot):
    import torch

    from midog_viewer._qt.training_widget import TrainingWidget
    from midog_viewer.detect import CascadeConfig, build_cascade_rcnn, save_checkpoint

    viewer, widget = review
    viewer.window.add_dock_widget(widget, name="Mitosis review")
    panel = TrainingWidget(viewer, runs_dir=tmp_path / "runs")
    viewer.window.add_dock_widget(panel, name="Train the detector")
    panel.sync_with_review()
    assert panel.current_store == Path(widget.store.path)  # the review dock's store is the panel's "current"

    torch.manual_seed(0)
    run = tmp_path / "runs" / "run-1"
    run.mkdir(parents=True)
    tuned = dataclasses.replace(CascadeConfig.named("tiny"), score_threshold=0.35)  # chosen on validation
    save_checkpoint(build_cascade_rcnn(tuned), run / "best.safetensors", tuned, {"trained_on": "nothing (test)"})
    panel.run_dir = run
    with qtbot.waitSignal(panel.model_ready) as ready:
        panel.use_model()
    assert ready.args == [str(run / "best.safetensors")]
    assert Path(widget.detector.info.path) == run / "best.safetensors"
    assert widget.model_name.text().splitlines()[0] == "Model: best.safetensors"
    assert widget.score_threshold == 0.35  # the slider starts at the new model's operating point


def test_the_file_menu_imports_annotations_through_the_review_dock(review, tmp_path, monkeypatch):
    from napari._app_model import get_app_model

    from midog_viewer._qt import menus

    viewer, widget = review
    viewer.window.add_dock_widget(widget, name="Mitosis review")
    entries = [getattr(item, "command", None) for item in get_app_model().menus.get_menu("napari/file/io_utilities")]
    assert "midog-viewer.import_annotations" in [c.id for c in entries if c is not None]

    labels = tmp_path / "labels.csv"
    labels.write_text("image,label,x,y\nsmall_hpf.tiff,mitosis,100,100\n")
    monkeypatch.setattr(
        "qtpy.QtWidgets.QFileDialog.getOpenFileName", lambda *args, **kwargs: (str(labels), "")
    )
    before = len(widget.session.table)
    menus.import_annotations(viewer)
    table = widget.session.table
    assert len(table) == before + 1
    assert [75, 75, 125, 125] in table.boxes.tolist()
    assert menus.review_dock(viewer) is widget  # the open dock is used, not a second one


def test_the_file_menu_opens_the_review_dock_and_asks_for_an_image_first(make_napari_viewer, tmp_path, monkeypatch):
    from midog_viewer._qt import menus

    monkeypatch.setenv("MIDOG_VIEWER_DB", str(tmp_path / "reviews.sqlite"))
    viewer = make_napari_viewer()
    shown = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", shown.append)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label,x,y\nsmall_hpf.tiff,mitosis,100,100\n")
    monkeypatch.setattr(
        "qtpy.QtWidgets.QFileDialog.getOpenFileName", lambda *args, **kwargs: (str(labels), "")
    )
    menus.import_annotations(viewer)
    assert isinstance(viewer.window._qt_window.findChild(ReviewWidget), ReviewWidget)
    assert shown == ["Open the image the annotations belong to before importing them."]


def test_hpfs_drawn_moved_and_deleted_by_hand_are_stored_at_once(review):
    viewer, widget = review
    layer = widget.hpf_layers.fields
    assert layer is not None and len(layer.data) == 0  # there to draw in before any HPF is marked
    store, slide_id = widget.session.store, widget.session.slide_id

    def stored():
        return sorted((r.x, r.y, r.w, r.h) for r in store.hpf_regions(slide_id))

    layer.add_rectangles(np.array([[100.0, 200.0], [400.0, 600.0]]))  # rows, columns: y 100-400, x 200-600
    assert stored() == [(200.0, 100.0, 400.0, 300.0)]
    layer.add_rectangles(np.array([[0.0, 0.0], [50.0, 80.0]]))
    assert stored() == [(0.0, 0.0, 80.0, 50.0), (200.0, 100.0, 400.0, 300.0)]
    layer.selected_data = {0}
    layer.data = [layer.data[0] + 10.0, layer.data[1]]  # the first one moved by 10 px
    assert stored() == [(0.0, 0.0, 80.0, 50.0), (210.0, 110.0, 400.0, 300.0)]
    layer.selected_data = {1}
    layer.remove_selected()
    assert stored() == [(210.0, 110.0, 400.0, 300.0)]
    # What the store holds is what the counts use and what a reopened slide shows.
    widget.hpf_layers.show_fields()
    assert len(widget.hpf_layers.fields.data) == 1


def test_the_dock_picks_the_model_made_for_what_is_open_and_names_its_tissue(
    make_napari_viewer, review_store, qtbot, tmp_path, monkeypatch, shared_data
):
    from midog_viewer.detect.models import DEMO_MODEL, REAL_MODEL

    monkeypatch.setenv("MIDOG_VIEWER_CACHE", str(tmp_path / "cache"))
    from midog_viewer.synthetic import sample_path

    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, store=review_store)
    qtbot.addWidget(widget)
    add_slide_layer(viewer, sample_path())
    assert Path(widget.detector.info.path) == DEMO_MODEL.path
    assert "synthetic" in widget.model_name.text()
    warned = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_warning", warned.append)
    widget.detect_region((0, 0, 64, 64), wait=True)
    assert warned == []  # the demo model on its own sample is right
    add_slide_layer(viewer, shared_data / "slides" / "CMU-1-Small-Region.svs")
    real = REAL_MODEL if REAL_MODEL.path.is_file() else DEMO_MODEL
    assert Path(widget.detector.info.path) == real.path and real.tissue in widget.model_name.text()
    if real is DEMO_MODEL:  # a checkout without the real model: the warning must come, once
        widget.detect_region((0, 0, 64, 64), wait=True)
        widget.detect_region((0, 0, 64, 64), wait=True)
        assert len(warned) == 1 and "synthetic" in warned[0]
    widget.use_model(str(DEMO_MODEL.path))  # chosen by the user: kept for the next slide, and warned about
    widget.detect_region((0, 0, 64, 64), wait=True)
    assert any("synthetic" in text for text in warned)


def test_export_buttons_refuse_the_review_database_itself(review, tmp_path, monkeypatch):
    viewer, widget = review
    widget.detect_whole(wait=True)
    widget.step()
    widget.decide("accept")
    shown = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", shown.append)
    db = Path(widget.session.store.path)
    files = [db, db.with_name(db.name + "-wal")]
    before = [p.read_bytes() for p in files]
    (tmp_path / "link.csv").symlink_to(db)
    targets = [("counts", db), ("csv", db), ("coco", db.with_name(db.name + "-wal")), ("sliderunner", tmp_path / "link.csv"),
               ("geojson", db.with_name(db.name + "-shm"))]
    for fmt, target in targets:
        assert widget.export(fmt, target) is None
    assert len(shown) == len(targets) and all("review database" in m and "\n" not in m for m in shown)
    assert [p.read_bytes() for p in files] == before
    assert widget.session.store.integrity_check() == "ok"


def test_space_after_clicking_a_dock_button_steps_instead_of_pressing_it_again(review, qtbot):
    viewer, widget = review
    widget.detect_whole(wait=True)
    button = widget.counts_panel.mark_hpf
    QTest.mouseClick(button, Qt.LeftButton)  # a real click: the button must not keep the keyboard
    assert len(widget.session.store.hpf_regions(widget.session.slide_id)) == 1
    assert button.focusPolicy() == Qt.NoFocus
    _press(viewer, Qt.Key_Space)
    _press(viewer, Qt.Key_Space)
    assert len(widget.session.store.hpf_regions(widget.session.slide_id)) == 1
    assert widget.selected is not None  # Space stepped to a pending detection
    widget.mark_current_hpf()  # the field now in view (stepping moved the camera) ...
    widget.mark_current_hpf()  # ... marked twice is stored once
    assert len(widget.session.store.hpf_regions(widget.session.slide_id)) == 2


def test_keys_that_cannot_act_say_why(review):
    viewer, widget = review
    widget.detect_whole(wait=True)
    widget.select(None)
    before = [s for s in widget.session.table.status]
    _press(viewer, Qt.Key_A)
    assert "Nothing selected" in widget.status.text()
    assert list(widget.session.table.status) == before
    _press(viewer, Qt.Key_Z, Qt.ControlModifier)
    assert "Nothing of yours" in widget.status.text() and "to undo" in widget.status.text()


def test_buttons_without_an_image_say_what_to_do(make_napari_viewer, review_store, stand_in, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    shown = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_info", shown.append)
    widget.detect_whole()
    widget.detect_visible()
    widget.mark_current_hpf()
    assert len(shown) == 3 and all("Open a slide" in text for text in shown)


def test_the_dock_shows_progress_the_reviewer_and_where_reviews_are_saved(review, qtbot):
    viewer, widget = review
    widget.detect_whole(wait=True)
    assert str(widget.session.store.path) in widget.saved_in.text()
    assert widget.reviewer_name.text() == "tester"
    total = int(widget.review_progress.text().split(" of ")[1].split()[0])
    assert total > 0 and widget.review_progress.text().startswith("Reviewed 0 of")
    widget.reviewer_name.setText("Dr Bob")
    widget.reviewer_name.editingFinished.emit()
    widget.step()
    widget.decide("accept")
    assert widget.review_progress.text().startswith(f"Reviewed 1 of {total}")
    last = widget.session.store.decisions(widget.session.slide_id)[-1]
    assert last.reviewer == "Dr Bob"


def test_detect_whole_image_searches_the_tissue_and_records_its_share(review, shared_data):
    viewer, widget = review
    widget.detect_whole(wait=True)
    assert widget.detector.tile_filters[-1] is not None  # the whole image: tissue tiles only
    runs = widget.session.store.detection_runs(widget.session.slide_id)
    assert 0 < runs[-1]["params"]["tissue_fraction"] <= 1
    widget.detect_region((0, 0, 256, 256), wait=True)
    assert widget.detector.tile_filters[-1] is None  # a region the user chose is searched whole


def test_the_dock_lists_the_stores_slides_busiest_first_and_opens_one_at_its_hotspot(
    review, tmp_path, monkeypatch, qtbot
):
    from midog_viewer.review.cohort import cohort_rows

    viewer, widget = review
    widget.detect_whole(wait=True)
    quiet = tmp_path / "quiet.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(quiet)
    widget.store.add_slide(quiet, width=64, height=64, mpp=0.25)
    rows = widget.list_slides()
    assert [r["slide"] for r in rows][0] == "small_hpf.tiff" and rows[0]["hotspot"] > 0
    assert widget.cohort_panel.table.rowCount() == 2
    assert rows == cohort_rows(widget.store, widget.counts_panel.hpf_area.value())
    opened = []
    monkeypatch.setattr(type(widget.viewer), "open", lambda self, path, plugin=None: opened.append((path, plugin)))
    monkeypatch.setattr(widget, "go_to_hotspot", lambda: opened.append("hotspot"))
    widget.cohort_panel.table.cellDoubleClicked.emit(0, 0)
    assert opened == [(rows[0]["path"], "midog-viewer"), "hotspot"]
