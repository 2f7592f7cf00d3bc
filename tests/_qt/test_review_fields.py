"""Issue 12, items 6-8, 10, 11 in the dock: moved slides keep their review, one-slide imports, a look per kind of
box with a legend, boxes visible at whole-slide zoom, a fixed physical field per step, outlined HPF and hotspot."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import add_slide_layer
from midog_label_files import midog_json
from qtpy.QtWidgets import QLabel

from midog_viewer._qt.hpf_layers import CURRENT_HPF_COLOUR, HOTSPOT_COLOUR, OUTLINES_NAME
from midog_viewer._qt.legend import LOOKS, MIN_SCREEN_PX
from midog_viewer._qt.review_widget import ReviewWidget
from midog_viewer.classes import HARD_NEGATIVE, MITOTIC_FIGURE
from midog_viewer.io import open_slide

pytestmark = pytest.mark.gui


def _dock(make_napari_viewer, stand_in, review_store, qtbot, **viewer_kwargs):
    viewer = make_napari_viewer(**viewer_kwargs)
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    return viewer, widget


def _open(viewer, path, mpp="file", scale=None, hpf=None):
    """The slide layer of ``path``, with its pixel size overridden (``mpp``) and its layer scale chosen."""
    slide = open_slide(path)
    if mpp != "file":
        slide.mpp = mpp
    metadata = {"slide": slide}
    if hpf is not None:
        metadata["ground_truth"] = {"boxes": hpf.boxes, "labels": list(hpf.labels)}
    scale = scale if scale is not None else (slide.mpp or 1.0)
    return viewer.add_image(slide.levels, rgb=True, multiscale=True, scale=(scale, scale), metadata=metadata,
                            name=path.stem)


def _store_boxes(widget, boxes, label=MITOTIC_FIGURE):
    """Detections straight into the session (no model), drawn by the dock; their keys."""
    run = widget.session.start_run("test", {})
    keys = widget.session.add_detections(run, np.asarray(boxes, float), np.full(len(boxes), 0.95), [label] * len(boxes))
    widget.rebuild_overlay()
    return keys


# -- item 6 ---------------------------------------------------------------------------------------------


def test_a_moved_slide_reopens_with_its_review_and_the_dock_says_where_it_was(
    make_napari_viewer, small_hpf, stand_in, review_store, qtbot, tmp_path
):
    first = tmp_path / "case.tiff"
    shutil.copy(small_hpf[0], first)
    viewer, widget = _dock(make_napari_viewer, stand_in, review_store, qtbot)
    layer = add_slide_layer(viewer, first)
    widget.add_mitosis_at(300, 300)
    viewer.layers.remove(layer)
    moved = tmp_path / "archive" / "case-renamed.tiff"
    moved.parent.mkdir()
    first.rename(moved)
    add_slide_layer(viewer, moved)
    status = widget.status.text()
    assert "1 objects restored" in status
    assert f"Found the review of case-renamed.tiff (moved from {first.resolve()})" in status
    assert review_store.slide(widget.session.slide_id).path == str(moved.resolve())


# -- item 7 ---------------------------------------------------------------------------------------------


def _labels_json(path, images: dict[str, int]):
    """Labels for 1024 x 768 images, the boxes inside the small HPF."""
    return midog_json(path, images, size=(1024, 768), step=(150, 100))


def test_import_brings_the_open_slides_labels_only_unless_all_are_asked_for(
    make_napari_viewer, small_hpf, stand_in, review_store, qtbot, tmp_path, monkeypatch
):
    viewer, widget = _dock(make_napari_viewer, stand_in, review_store, qtbot)
    add_slide_layer(viewer, small_hpf[0])
    labels = _labels_json(tmp_path / "labels.json", {"small_hpf.tiff": 3, "other.tiff": 4, "third.tiff": 2})
    line = widget.import_annotations(labels)
    assert line == ("labels.json: 3 objects for small_hpf.tiff (3 mitotic figure); "
                    "6 objects of 2 other slides not imported (Import all slides… brings them in).")
    assert [s.name for s in review_store.slides()] == ["small_hpf.tiff"]
    assert int(np.sum(widget.session.table.kind == "annotation")) == 3

    everything = _labels_json(tmp_path / "everything.json", {"small_hpf.tiff": 0, "other.tiff": 4, "third.tiff": 2})
    monkeypatch.setattr("qtpy.QtWidgets.QFileDialog.getOpenFileName", lambda *a, **k: (str(everything), ""))
    widget.counts_panel.import_all_button.click()
    assert sorted(s.name for s in review_store.slides()) == ["other.tiff", "small_hpf.tiff", "third.tiff"]


def test_the_real_midog_json_onto_the_svs_adds_no_slide_and_says_what_was_left_out(
    make_napari_viewer, stand_in, review_store, qtbot, shared_data, monkeypatch
):
    shown = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_info", shown.append)
    viewer, widget = _dock(make_napari_viewer, stand_in, review_store, qtbot)
    add_slide_layer(viewer, shared_data / "slides" / "CMU-1-Small-Region.svs")
    widget.import_annotations(shared_data / "annotations" / "MIDOG.json")
    assert shown[-1] == ("MIDOG.json: 0 objects for CMU-1-Small-Region.svs; 4,435 objects of 150 other slides "
                         "not imported (Import all slides… brings them in).")
    assert len(review_store.slides()) == 1 and len(widget.session.table) == 0


# -- item 8 ---------------------------------------------------------------------------------------------


def _look(box_layer, key):
    row = box_layer.row_of(key)
    layer = box_layer.layer
    return (tuple(np.round(layer.border_color[row], 2)), str(layer.symbol[row]), round(float(layer.border_width[row]), 3))


def test_each_kind_of_box_has_its_own_look_and_the_legend_names_each(
    make_napari_viewer, small_hpf, stand_in, review_store, qtbot
):
    viewer, widget = _dock(make_napari_viewer, stand_in, review_store, qtbot)
    path, hpf = small_hpf
    add_slide_layer(viewer, path, hpf)
    widget.detect_whole(wait=True)
    widget.step()
    accepted = widget.selected
    widget.decide("accept")
    widget.step()
    rejected = widget.selected
    widget.decide("reject")
    widget.step()
    pending = widget.selected
    widget.add_mitosis_at(40, 700)
    hand = widget.selected
    t = widget.session.table
    truth = (t.kind == "annotation") & (t.status == "ground truth")
    truth_mitosis = int(widget.session.keys[np.flatnonzero(truth & (t.label == MITOTIC_FIGURE))[0]])
    truth_lookalike = int(widget.session.keys[np.flatnonzero(truth & (t.label == HARD_NEGATIVE))[0]])
    overlay = widget.overlay
    looks = {
        "pending": _look(overlay.predictions, pending),
        "accepted": _look(overlay.predictions, accepted),
        "rejected": _look(overlay.predictions, rejected),
        "hand": _look(overlay.ground_truth, hand),
        "truth mitosis": _look(overlay.ground_truth, truth_mitosis),
        "truth look-alike": _look(overlay.ground_truth, truth_lookalike),
    }
    assert len(set(looks.values())) == 6, looks
    # the seed's meaning stays: yellow prediction, red error, white annotation / accepted
    assert looks["pending"][0] == (1.0, 1.0, 0.0, 1.0) and looks["rejected"][0] == (1.0, 0.0, 0.0, 1.0)
    assert looks["accepted"][0] == looks["hand"][0] == looks["truth mitosis"][0] == (1.0, 1.0, 1.0, 1.0)
    for look in LOOKS:  # what the layers draw is what the legend shows
        assert looks[look.key] == (tuple(np.round(look.rgba, 2)), look.symbol, round(look.border, 3))
    assert set(widget.legend.rows) == set(looks) and widget.isAncestorOf(widget.legend)  # in the dock (its scroll area)
    assert widget.legend.rows["truth look-alike"].text() == "ground truth: look-alike (not a mitosis)"


@pytest.mark.slow
def test_red_boxes_stay_visible_at_whole_slide_zoom_on_the_svs(
    make_napari_viewer, stand_in, review_store, qtbot, shared_data
):
    from scipy import ndimage

    viewer, widget = _dock(make_napari_viewer, stand_in, review_store, qtbot, show=True)
    viewer.window._qt_window.resize(1400, 900)
    add_slide_layer(viewer, shared_data / "slides" / "CMU-1-Small-Region.svs")
    # twelve mitosis-sized boxes (25 px = 12.5 µm at 0.5 µm/px), far apart, all rejected: red
    centres = [(300 + 520 * i, 300 + 800 * j) for i in range(4) for j in range(3)]
    keys = _store_boxes(widget, [(x - 12, y - 12, x + 13, y + 13) for x, y in centres])
    for key in keys:
        widget.select(int(key))
        widget.decide("reject")
    widget.select(None)
    viewer.reset_view()
    qtbot.wait(200)

    def red(image):
        rgb = image[..., :3].astype(int)
        return (rgb[..., 0] > 200) & (rgb[..., 1] < 70) & (rgb[..., 2] < 70)

    with_boxes = viewer.screenshot(canvas_only=True, flash=False)
    widget.overlay.predictions.layer.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)
    added = red(with_boxes) & ~red(without)
    labelled, count = ndimage.label(ndimage.binary_dilation(added, iterations=2))
    sizes = ndimage.sum(added, labelled, range(1, count + 1))
    screen_px_per_box = 25 * viewer.scene.camera.zoom * 0.499
    assert screen_px_per_box < MIN_SCREEN_PX  # the boxes themselves would be a few pixels wide
    assert count == len(keys), f"{count} red marks for {len(keys)} rejected boxes"
    assert sizes.min() >= 40, f"red marks of {sorted(sizes)} pixels"


# -- item 10 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mpp", "scale", "zoom"), [(0.5, 1.0, 2.0), (0.5, 0.5, 4.0), (0.25, 0.25, 4.0), (None, 1.0, 1.0)])
def test_a_step_shows_a_fixed_physical_field_whatever_the_scan(
    make_napari_viewer, small_hpf, stand_in, review_store, qtbot, mpp, scale, zoom
):
    """0.25 µm per screen pixel: a 0.5 µm/px scan at two screen px per slide pixel (zoom 2 when the world is in
    pixels, 4 when it is in µm); unknown pixel size: one screen px per slide pixel, as before."""
    viewer, widget = _dock(make_napari_viewer, stand_in, review_store, qtbot)
    _open(viewer, small_hpf[0], mpp=mpp, scale=scale)
    _store_boxes(widget, [(500, 400, 550, 450)])
    viewer.reset_view()
    assert viewer.scene.camera.zoom < zoom
    widget.step()
    assert widget.selected is not None
    assert viewer.scene.camera.zoom == pytest.approx(zoom)
    assert np.allclose(viewer.scene.camera.center[-2:], (425 * scale, 525 * scale))


# -- item 11 --------------------------------------------------------------------------------------------


def _rectangle(shape) -> tuple[float, float, float, float]:
    (y0, x0), (y1, x1) = np.min(shape, axis=0), np.max(shape, axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def test_the_current_hpf_and_the_hotspot_are_outlined_and_follow_changes(
    make_napari_viewer, small_hpf, stand_in, review_store, qtbot
):
    viewer, widget = _dock(make_napari_viewer, stand_in, review_store, qtbot)
    path, hpf = small_hpf
    add_slide_layer(viewer, path, hpf)
    widget.update_counts(wait=True)
    assert len(widget.hpf_layers.outlines.data) == 1  # no detection yet: no score, so no hotspot to outline
    widget.detect_whole(wait=True)
    widget.update_counts(wait=True)
    outlines = widget.hpf_layers.outlines
    assert outlines is not None and outlines.name == OUTLINES_NAME and outlines in viewer.layers
    assert len(outlines.data) == 2
    x, y, w, h = widget.current_hpf()  # an HPF of 0.237 mm² is larger than this 1024 x 768 px field
    inside = (max(x, 0), max(y, 0), min(x + w, 1024) - max(x, 0), min(y + h, 768) - max(y, 0))
    assert np.allclose(_rectangle(outlines.data[0]), inside, atol=1e-3)
    hotspot = widget.session.counts(None, widget.counts_panel.hpf_area.value()).hotspot
    assert np.allclose(_rectangle(outlines.data[1]), (hotspot.x, hotspot.y, hotspot.w, hotspot.h), atol=1e-3)
    colours = [tuple(np.round(c, 2)) for c in outlines.edge_color]
    assert colours == [(0.0, 1.0, 1.0, 1.0), (1.0, 0.65, 0.0, 1.0)] and (CURRENT_HPF_COLOUR, HOTSPOT_COLOUR) == ("cyan", "orange")
    assert viewer.layers.selection.active is widget.overlay.predictions.layer  # the review keys stay on the boxes
    assert "Current HPF<br>(cyan outline)" in [label.text() for label in widget.counts_panel.findChildren(QLabel)]
    assert "hotspot (orange outline)" in widget.counts_panel.score.text()

    before = _rectangle(outlines.data[0])
    widget.counts_panel.hpf_area.setValue(0.01)  # a field that fits inside the image, wherever it is marked
    viewer.scene.camera.center = (viewer.scene.camera.center[0], 380 * 0.25, 520 * 0.25)
    widget.mark_current_hpf()
    widget.update_counts(wait=True)
    moved = widget.hpf_layers.outlines
    assert np.allclose(_rectangle(moved.data[0]), widget.current_hpf(), atol=1e-3)
    assert not np.allclose(_rectangle(moved.data[0]), before)
    marked = review_store.hpf_regions(widget.session.slide_id)[0]
    assert np.allclose(_rectangle(moved.data[0]), (marked.x, marked.y, marked.w, marked.h), atol=1e-3)


# -- a frame without a pixel size -------------------------------------------------------------------


def test_a_frame_without_a_pixel_size_gets_one_in_the_dock_and_keeps_it(
    make_napari_viewer, stand_in, review_store, qtbot, tmp_path, monkeypatch
):
    from PIL import Image

    from midog_viewer.review.session import ReviewSession

    frame = tmp_path / "frame.png"  # a PNG records no µm/px: no HPF, no per-mm² count, no hotspot
    Image.fromarray(np.full((1200, 1600, 3), 200, np.uint8)).save(frame)
    viewer, widget = _dock(make_napari_viewer, stand_in, review_store, qtbot)
    _open(viewer, frame)
    panel = widget.counts_panel
    assert not panel.pixel_size_row.isHidden()
    widget.update_counts(wait=True)
    assert "no pixel size" in panel.score.text() and widget.current_hpf() is None
    errors = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", errors.append)
    widget.set_pixel_size(float("nan"))
    assert len(errors) == 1 and "pixel size must be a positive number of µm" in errors[0]
    assert widget.session.mpp is None and review_store.slide(widget.session.slide_id).mpp is None

    widget.set_pixel_size(0.25)  # what the Set button sends
    assert panel.pixel_size_row.isHidden() and widget.slide.mpp == 0.25
    assert "Pixel size of frame.png recorded: 0.25 µm/px" in widget.status.text()
    x, y, w, h = widget.current_hpf()
    assert w * h * 0.25**2 / 1e6 == pytest.approx(panel.hpf_area.value(), rel=0.01)  # an HPF of 0.237 mm²
    widget.update_counts(wait=True)
    assert "no pixel size" not in panel.score.text()
    assert review_store.slide(widget.session.slide_id).mpp == 0.25  # stored at once, for the next session
    again = ReviewSession(review_store, frame, width=1600, height=1200)
    assert again.mpp == 0.25 and again.slide_id == widget.session.slide_id
    again.close()
    viewer.layers.clear()  # reopened in the dock: the recorded pixel size is used, nothing is asked
    _open(viewer, frame)
    assert widget.slide.mpp == 0.25 and panel.pixel_size_row.isHidden() and widget.current_hpf() is not None
