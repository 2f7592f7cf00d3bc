"""The training panel's atypical-classifier run: its command line, a run on the current review store to the
end, a failed one, and "Use this model" making the review dock score new detections with the new classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from midog_viewer._qt.training_atypical import ATYPICAL, AtypicalRequest
from midog_viewer._qt.training_widget import TrainingWidget
from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.review.store import ReviewStore
from midog_viewer.synthetic import make_hpf, write_hpf_tiff

pytestmark = pytest.mark.gui


def _reviewed_store(folder: Path) -> Path:
    """Three synthetic slides, each with a figure a reviewer marked atypical, one marked normal, one imported normal."""
    db = folder / "reviews.sqlite"
    with ReviewStore(db, reviewer="tester") as store:
        for seed in range(3):
            path = folder / f"slide{seed}.tiff"
            write_hpf_tiff(make_hpf(seed=seed, width=256, height=256), path)
            slide = store.add_slide(path, mpp=0.25)
            for k, atypical in enumerate((True, False)):
                store.decide_subtype("annotation", store.add_annotation(slide, [40 + 80 * k, 60, 70 + 80 * k, 90],
                                                                        MITOTIC_FIGURE), atypical)
            store.add_annotations(slide, np.array([[100.0, 160, 130, 190]]), [MITOTIC_FIGURE], "gt.json", atypical=[0])
    return db


def _panel(qtbot, tmp_path, monkeypatch, viewer=None) -> TrainingWidget:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MIDOG_VIEWER_DB", str(tmp_path / "none.sqlite"))
    widget = TrainingWidget(viewer, runs_dir=tmp_path / "runs")
    qtbot.addWidget(widget)
    widget.target_box.setCurrentIndex(1)
    return widget


def test_the_atypical_request_builds_the_cli_arguments(tmp_path):
    request = AtypicalRequest(out=tmp_path / "run", stores=[tmp_path / "a.sqlite", tmp_path / "b.sqlite"],
                              data=tmp_path / "crops", init=tmp_path / "mine.safetensors", epochs=4,
                              extra=["--lr", "0.001"])
    assert request.arguments() == [
        "train-atypical", "--store", str(tmp_path / "a.sqlite"), "--store", str(tmp_path / "b.sqlite"), "--data",
        str(tmp_path / "crops"), "--init", str(tmp_path / "mine.safetensors"), "--epochs", "4", "--device", "cpu",
        "--out", str(tmp_path / "run"), "--quiet", "--lr", "0.001"]
    scratch = AtypicalRequest(out=tmp_path / "run", init=tmp_path / "mine.safetensors", scratch=True)
    assert "--scratch" in scratch.arguments() and "--init" not in scratch.arguments()
    shipped = AtypicalRequest(out=tmp_path / "run")  # no --init: the command fine-tunes the shipped classifier
    assert "--init" not in shipped.arguments() and "--scratch" not in shipped.arguments()


def test_choosing_the_classifier_shows_its_settings(qtbot, tmp_path, monkeypatch):
    widget = _panel(qtbot, tmp_path, monkeypatch)
    widget.show()
    assert widget.atypical_options.isVisible() and not widget.coco_rows.isVisible()
    assert not widget.detector_rows.isVisible()
    # before any run, the plot and the extra options speak of what is chosen
    assert widget.f1_axes.get_ylabel() == "balanced accuracy"
    assert "--tune-threshold" not in widget.extra_edit.placeholderText()
    widget.set_current_store(_reviewed_store(tmp_path))
    request = widget.request()
    assert isinstance(request, AtypicalRequest) and request.stores == [tmp_path / "reviews.sqlite"]
    widget.target_box.setCurrentIndex(0)
    assert widget.coco_rows.isVisible() and not widget.atypical_options.isVisible()
    assert widget.request().arguments()[0] == "train"
    assert widget.f1_axes.get_ylabel() == "validation F1" and "--tune-threshold" in widget.extra_edit.placeholderText()


@pytest.mark.slow
def test_the_panel_retrains_the_classifier_on_the_current_store_and_hands_it_on(qtbot, tmp_path, monkeypatch):
    widget = _panel(qtbot, tmp_path, monkeypatch)
    widget.set_current_store(_reviewed_store(tmp_path))
    widget.atypical_options.epochs_box.setValue(2)
    widget.extra_edit.setText("--batch-size 4 --val-fraction 0.3 --log-every 1")
    widget.start()
    assert widget.process.arguments()[2:4] == ["train-atypical", "--store"]
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=300_000)
    assert widget.events[-1]["event"] == "done", widget.status.text()
    assert widget.kind is ATYPICAL and widget.run_dir.name.startswith("atypical-run-")
    assert widget.progress_bar.format() == "done" and widget.progress_bar.value() == 1000
    text = widget.result_label.text()
    assert "current classifier" in text and "new classifier" in text and "balanced accuracy" in text
    assert widget.loss_axes.lines and widget.f1_axes.lines  # the loss per step; the figure per epoch and the old one's
    assert widget.f1_axes.get_ylabel() == "balanced accuracy"
    with qtbot.waitSignal(widget.classifier_ready, timeout=1000) as signal:
        widget.use_button.click()
    assert signal.args == [str(widget.run_dir / "model.safetensors")]
    assert widget.atypical_options.current == widget.run_dir / "model.safetensors"  # the next run starts there


def test_a_store_without_reviewed_subtypes_fails_and_says_how(qtbot, tmp_path, monkeypatch):
    widget = _panel(qtbot, tmp_path, monkeypatch)
    with ReviewStore(tmp_path / "empty.sqlite") as store:
        store.add_annotation(store.add_slide(tmp_path / "x.tiff", name_only=True), [0, 0, 9, 9], MITOTIC_FIGURE)
    widget.set_current_store(tmp_path / "empty.sqlite")
    widget.start()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=120_000)
    assert "Training failed" in widget.status.text() and "no reviewed subtypes" in widget.status.text()
    assert "press T" in widget.status.text() and not widget.use_button.isEnabled()
    assert not widget.run_dir.exists()  # nothing left behind


def test_use_this_model_makes_the_dock_score_new_detections_with_it(review, tmp_path, qtbot, monkeypatch):
    from midog_viewer._qt import notify
    from midog_viewer.atypical.model import AtypicalConfig, AtypicalNet, save_classifier

    viewer, dock = review
    viewer.window.add_dock_widget(dock, name="Mitosis review")
    panel = _panel(qtbot, tmp_path, monkeypatch, viewer)
    viewer.window.add_dock_widget(panel, name="Train the detector")
    run = tmp_path / "runs" / "atypical-run-1"
    save_classifier(AtypicalNet(AtypicalConfig(input_px=32, widths=(4, 8), blocks=(1, 1), threshold=0.123)),
                    run / "model.safetensors")
    panel.run_dir, panel.kind = run, ATYPICAL
    with qtbot.waitSignal(panel.classifier_ready):
        panel.use_model()
    assert dock.runner.classifier_path == str(run / "model.safetensors")
    dock.detect_whole(wait=True)
    runs = dock.store.detection_runs(dock.session.slide_id)
    assert runs[-1]["atypical_threshold"] == pytest.approx(0.123)  # new detections: the new classifier's call

    errors = []
    monkeypatch.setattr(notify, "show_error", errors.append)
    (tmp_path / "junk.safetensors").write_text("no weights")
    dock.use_atypical_model(str(tmp_path / "junk.safetensors"))
    assert len(errors) == 1 and dock.runner.classifier_path == str(run / "model.safetensors")  # unchanged
    panel.sync_with_review()
    assert panel.atypical_options.current == run / "model.safetensors"
