"""What the reviewer sees: the rendered canvas shows yellow, red and white boxes; HPF tools; a real model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import add_slide_layer

from midog_viewer._qt.review_widget import ReviewWidget

pytestmark = pytest.mark.gui


def _pixels(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    return int(np.all(np.abs(image[..., :3].astype(int) - rgb) <= tolerance, axis=-1).sum())


def test_the_canvas_shows_yellow_red_and_white_boxes(make_napari_viewer, small_hpf, stand_in, review_store,
                                                      qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 900)
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    path, hpf = small_hpf
    slide_layer = add_slide_layer(viewer, path, hpf)
    widget.detect_whole(wait=True)
    widget.step()
    widget.decide("accept")
    widget.step()
    widget.decide("reject")
    widget.overlay.ground_truth.layer.visible = False  # white must come from the accepted box alone
    viewer.reset_view()
    qtbot.wait(100)

    def shot(overlay_visible: bool) -> np.ndarray:
        for box_layer in (widget.overlay.predictions,):
            box_layer.layer.visible = overlay_visible
        return viewer.screenshot(canvas_only=True, flash=False)

    with_boxes, without = shot(True), shot(False)
    for name, rgb in (("yellow", (255, 255, 0)), ("red", (255, 0, 0)), ("white", (255, 255, 255))):
        added = _pixels(with_boxes, rgb) - _pixels(without, rgb)
        assert added > 20, f"no {name} box pixels on the canvas"
    assert slide_layer.visible


def test_hpf_grid_marked_fields_and_hotspot(make_napari_viewer, small_hpf, stand_in, review_store, qtbot):
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    path, hpf = small_hpf
    add_slide_layer(viewer, path, hpf)
    widget.counts_panel.grid.setChecked(True)
    assert widget.hpf_layers.grid is not None and len(widget.hpf_layers.grid.data) >= 1
    widget.counts_panel.grid.setChecked(False)
    assert widget.hpf_layers.grid is None
    widget.mark_current_hpf()
    assert len(review_store.hpf_regions(widget.session.slide_id)) == 1
    assert widget.hpf_layers.fields is not None and len(widget.hpf_layers.fields.data) == 1
    viewer.scene.camera.zoom = 50.0
    widget.go_to_hotspot()
    hotspot = widget.session.counts(None).hotspot
    centre = np.asarray(viewer.scene.camera.center[-2:]) / hpf.mpp
    np.testing.assert_allclose(centre, [hotspot.y + hotspot.h / 2, hotspot.x + hotspot.w / 2], atol=1.0)


def test_a_real_tiny_cascade_runs_in_the_worker_and_the_widget_comes_back(make_napari_viewer, small_hpf,
                                                                          review_store, qtbot):
    import torch

    from midog_viewer.detect import CascadeConfig, build_cascade_rcnn
    from midog_viewer.detect.engine import Detector

    torch.manual_seed(0)
    model = build_cascade_rcnn(CascadeConfig.named("tiny"))
    detector = Detector.from_model(model, device="cpu", score_thr=0.1, stain_normalize=False)
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, detector=detector, store=review_store)
    qtbot.addWidget(widget)
    add_slide_layer(viewer, *small_hpf)
    widget.threshold.setValue(widget.threshold.minimum())  # an untrained model scores low: draw everything
    widget.detect_region((0, 0, 512, 512))
    assert widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.detect_view_button.isEnabled() and widget.progress.value() == widget.progress.maximum() == 1
    runs = review_store.detection_runs(widget.session.slide_id)
    assert len(runs) == 1 and runs[0]["params"]["region"] == [0, 0, 512, 512]
    stored = review_store.objects(widget.session.slide_id)
    drawn = len(widget.overlay.predictions) + len(widget.overlay.hard_negatives)
    assert int((stored.kind == "detection").sum()) == drawn
