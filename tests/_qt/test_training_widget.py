"""The training panel: its command line, a real run in a child process cancelled from the panel, and a run
to the end whose "Use this model" hands the new checkpoint on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midog_viewer._qt.training_widget import TrainingRequest, TrainingWidget
from midog_viewer.synthetic import make_hpf, midog_json, write_hpf_tiff

FAST = "--patch-size 128 --rcnn-samples 32 --batch-size 2 --warmup-steps 5 --log-every 1 --val-fraction 0.34"


def _coco_folder(folder: Path) -> tuple[Path, Path]:
    """Three labelled 256 px synthetic fields and one MIDOG-style JSON naming them."""
    images = folder / "images"
    images.mkdir(parents=True)
    merged = None
    for index, seed in enumerate((0, 1, 2), start=1):
        hpf = make_hpf(seed=seed, width=256, height=256)
        name = f"{index:03d}.tiff"
        write_hpf_tiff(hpf, images / name)
        part = midog_json(hpf, name)
        for image in part["images"]:
            image["id"] = index
        for ann in part["annotations"]:
            ann["image_id"] = index
        if merged is None:
            merged = part
        else:
            merged["images"] += part["images"]
            merged["annotations"] += part["annotations"]
    for n, ann in enumerate(merged["annotations"], start=1):
        ann["id"] = n
    path = folder / "MIDOG.json"
    path.write_text(json.dumps(merged))
    return path, images


def test_request_builds_the_cli_arguments(tmp_path):
    request = TrainingRequest(
        out=tmp_path / "run", config="r50", epochs=3, stores=[tmp_path / "a.sqlite"], coco=tmp_path / "m.json",
        images=tmp_path / "img", split=tmp_path / "s.txt", baseline=tmp_path / "old.safetensors", extra=["--lr", "0.1"],
    )
    assert request.arguments() == [
        "train", "--db", str(tmp_path / "a.sqlite"), "--coco", str(tmp_path / "m.json"), "--images",
        str(tmp_path / "img"), "--split", str(tmp_path / "s.txt"), "--config", "r50", "--baseline",
        str(tmp_path / "old.safetensors"), "--epochs", "3", "--device", "cpu", "--out", str(tmp_path / "run"),
        "--quiet", "--lr", "0.1",
    ]
    fine_tune = TrainingRequest(out=tmp_path / "run", init=tmp_path / "old.safetensors")
    assert "--config" not in fine_tune.arguments() and "--init" in fine_tune.arguments()


@pytest.mark.slow
def test_panel_trains_cancels_and_hands_on_the_new_model(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MIDOG_VIEWER_DB", str(tmp_path / "none.sqlite"))
    coco, images = _coco_folder(tmp_path / "data")
    widget = TrainingWidget(None, runs_dir=tmp_path / "runs")
    qtbot.addWidget(widget)
    assert not widget.use_current_store.isChecked()  # no store file yet: nothing to train from there
    widget.coco_edit.setText(str(coco))
    widget.images_edit.setText(str(images))
    widget.epochs_box.setValue(3)
    widget.extra_edit.setText(FAST)

    # A run cancelled from the panel: the bar moves, the loss plot fills, the last checkpoint is kept.
    widget.start()
    qtbot.waitUntil(lambda: any(e["event"] == "step" for e in widget.events), timeout=300_000)
    assert widget.progress_bar.value() > 0 and "ETA" in widget.progress_bar.format()
    assert widget.loss_axes.lines
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=120_000)
    assert widget.events[-1]["event"] == "cancelled", widget.status.text()
    first_run = widget.run_dir
    assert (first_run / "last.safetensors").is_file()

    # A run to the end, compared with the cancelled run's model as the "current" one.
    widget.set_current_model(first_run / "last.safetensors")
    widget.epochs_box.setValue(1)
    qtbot.wait(1100)  # a new timestamped run folder
    widget.start()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=400_000)
    assert widget.events[-1]["event"] == "done", widget.status.text()
    assert widget.run_dir != first_run
    assert "old model" in widget.result_label.text() and "new model" in widget.result_label.text()
    assert widget.f1_axes.lines  # validation F1 per epoch and the old model's line
    with qtbot.waitSignal(widget.model_ready, timeout=1000) as signal:
        widget.use_button.click()
    assert signal.args == [str(widget.run_dir / "best.safetensors")]


def test_a_failed_run_says_why(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MIDOG_VIEWER_DB", str(tmp_path / "none.sqlite"))
    widget = TrainingWidget(None, runs_dir=tmp_path / "runs")
    qtbot.addWidget(widget)
    widget.start()  # no data chosen
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=120_000)
    assert "Training failed" in widget.status.text() and "no training data" in widget.status.text()
    assert not widget.use_button.isEnabled()
