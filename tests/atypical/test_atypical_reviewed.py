"""Retraining the atypical classifier on reviewed subtypes: which figures are labels, their crops, the CLI run,
and every bad input refused with one line, exit 2 and no run folder left."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reviewed_stores import LABELLED, build_store, write_slides

from midog_viewer.atypical.classify import detection_crop
from midog_viewer.atypical.data import load_crop
from midog_viewer.atypical.model import load_classifier, shipped_model_path
from midog_viewer.atypical.reviewed import CROPS_DIR, REVIEWED_SOURCE, reviewed_figures, write_crop_folder
from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.cli import main
from midog_viewer.errors import TrainingError
from midog_viewer.io import open_slide
from midog_viewer.review.store import ReviewStore
from midog_viewer.train.progress import read_progress

FAST = ["--epochs", "1", "--batch-size", "8", "--val-fraction", "0.3", "--quiet"]


@pytest.fixture()
def reviewed(tmp_path) -> tuple[Path, list[Path], dict]:
    slides = write_slides(tmp_path / "slides")
    db = tmp_path / "reviews.sqlite"
    return db, slides, build_store(db, slides)


def test_only_subtypes_a_human_gave_to_figures_that_count_are_labels(reviewed):
    """A reviewer's override and an imported flag count; a pending call, a rejected detection, an accepted one
    with only the model's call, an unflagged import, a non-mitosis, an undecided or deleted hand figure do not."""
    db, slides, ids = reviewed
    figures = reviewed_figures([db])
    got = {(f.slide, f.kind, f.object_id): f.atypical for f in figures}
    expected = {(name, *ids[(name, tag)]): atypical for name in (p.name for p in slides) for tag, atypical in LABELLED}
    assert got == expected
    assert {f.path for f in figures} == set(slides)
    with ReviewStore(db, read_only=True) as store:  # the overrides: the model's call was the other way
        table = store.objects(store.find_slide(slides[0].name).id)
        d0 = int(np.flatnonzero((table.kind == "detection") & (table.id == ids[(slides[0].name, "d0")][1]))[0])
        assert table.p_atypical[d0] < 0.5 and got[(slides[0].name, "detection", int(table.id[d0]))] == 1


def test_an_undone_subtype_decision_is_no_label_and_a_store_named_twice_counts_once(reviewed, tmp_path):
    db, slides, _ = reviewed
    other = tmp_path / "other.sqlite"
    with ReviewStore(other, reviewer="tester") as store:
        slide = store.add_slide(slides[0], mpp=0.25)
        run = store.add_detection_run(slide, "m", {}, atypical_threshold=0.5)
        (det,) = store.add_detections(run, np.array([[10, 10, 40, 40]]), [0.9], [MITOTIC_FIGURE], p_atypical=[0.2])
        store.decide(int(det), "accept")
        store.decide_subtype("detection", int(det), True)
        assert [(f.object_id, f.atypical) for f in reviewed_figures([other])] == [(int(det), 1)]
        store.undo(slide, "tester")  # only the model's call is left
        with pytest.raises(TrainingError, match="no reviewed subtypes in"):
            reviewed_figures([other])
        store.redo(slide, "tester")
    assert len(reviewed_figures([db, Path(str(db)), other])) == 3 * len(LABELLED) + 1


def _crop_folder(db, tmp_path):
    """The shipped classifier, its config, the reviewed figures of ``db``, their crop folder and its images.csv rows."""
    model = load_classifier()[0]
    figures = reviewed_figures([db])
    root = write_crop_folder(figures, tmp_path / "crops", model.config)
    with (root / "images.csv").open() as fh:
        images = list(csv.DictReader(fh))
    return model, model.config, figures, root, images


def test_a_training_crop_is_what_the_model_sees_at_detection(reviewed, tmp_path):
    db, slides, _ = reviewed
    model, cfg, figures, root, images = _crop_folder(db, tmp_path)
    with (root / "objects.csv").open() as fh:
        objects = list(csv.DictReader(fh))
    assert len(images) == len(objects) == len(figures) == 3 * len(LABELLED)
    assert {row["source"] for row in images} == {REVIEWED_SOURCE}
    assert [int(o["atypical"]) for o in objects] == [f.atypical for f in figures]
    assert all(o["label"] == MITOTIC_FIGURE for o in objects)
    for figure, image in list(zip(figures, images))[:4]:
        slide = open_slide(figure.path)
        seen = detection_crop(slide, figure.x, figure.y, model)
        cut = load_crop(root / image["file"], float(image["mpp"]), cfg.input_px, cfg.mpp)
        assert torch.equal(seen, cut)  # one rule: the same pixels, the training margin around them


def test_the_cli_fine_tunes_the_shipped_classifier_and_resumes_from_the_run_folder(reviewed, tmp_path, capsys):
    db, _, _ = reviewed
    run = tmp_path / "run"
    assert main(["train-atypical", "--store", str(db), "--out", str(run), *FAST]) == 0, capsys.readouterr().err
    record = json.loads((run / "run.json").read_text())
    assert record["init"] == str(shipped_model_path().resolve()) and record["stores"] == [str(db.resolve())]
    assert record["data_roots"] == [str((run / CROPS_DIR).resolve())] and record["recipe"]["lr"] == 5e-4
    events = read_progress(run)
    baseline = next(e for e in events if e["event"] == "baseline")
    assert baseline["threshold"] == pytest.approx(load_classifier()[0].config.threshold)
    model, provenance = load_classifier(run / "model.safetensors")
    assert provenance["validation"]["per_source"].keys() == {REVIEWED_SOURCE}
    assert json.loads((run / "metrics.json").read_text())["baseline"] == record["baseline"]

    shutil.move(str(db), str(tmp_path / "elsewhere.sqlite"))  # the run needs only its own folder now
    assert main(["train-atypical", "--resume", str(run), "--out", str(run), "--epochs", "2", "--quiet"]) == 0
    assert [e["event"] for e in read_progress(run)].count("epoch") == 2
    assert json.loads((run / "run.json").read_text())["stores"] == [str(db.resolve())]


def test_reviewed_subtypes_mix_with_the_base_crops(reviewed, crop_folder, tmp_path, capsys):
    db, _, _ = reviewed
    run = tmp_path / "run"
    status = main(["train-atypical", "--store", str(db), "--data", str(crop_folder), "--scratch", "--out", str(run),
                   "--epochs", "1", "--batch-size", "16", "--val-fraction", "0.3", "--quiet"])
    assert status == 0, capsys.readouterr().err
    _, provenance = load_classifier(run / "model.safetensors")
    assert set(provenance["validation"]["per_source"]) == {REVIEWED_SOURCE, "AMi-Br/X"}
    assert json.loads((run / "run.json").read_text())["init"] is None
    assert provenance["train_crops"] + provenance["val_crops"] == 3 * len(LABELLED) + 6 * 6 + 8


def _no_subtypes(tmp_path: Path) -> list[str]:
    slides = write_slides(tmp_path / "slides", n=1)
    with ReviewStore(tmp_path / "pending.sqlite") as store:
        slide = store.add_slide(slides[0], mpp=0.25)
        run = store.add_detection_run(slide, "m", {}, atypical_threshold=0.5)
        ids = store.add_detections(run, np.array([[10, 10, 40, 40]]), [0.9], [MITOTIC_FIGURE], p_atypical=[0.9])
        store.decide(int(ids[0]), "accept")  # accepted, but its subtype is still the model's call
    return ["--store", str(tmp_path / "pending.sqlite")]


def _moved_slide(tmp_path: Path) -> list[str]:
    slides = write_slides(tmp_path / "slides")
    build_store(tmp_path / "r.sqlite", slides)
    slides[1].rename(tmp_path / "moved.tiff")
    return ["--store", str(tmp_path / "r.sqlite")]


def _one_slide(tmp_path: Path) -> list[str]:
    build_store(tmp_path / "r.sqlite", write_slides(tmp_path / "slides", n=1))
    return ["--store", str(tmp_path / "r.sqlite")]


def _all_normal(tmp_path: Path) -> list[str]:
    slides = write_slides(tmp_path / "slides")
    with ReviewStore(tmp_path / "r.sqlite") as store:
        for path in slides:
            slide = store.add_slide(path, mpp=0.25)
            store.add_annotations(slide, np.array([[10, 10, 40, 40]]), [MITOTIC_FIGURE], "gt.json", atypical=[0])
    return ["--store", str(tmp_path / "r.sqlite")]


def _validation_of_one_class(tmp_path: Path) -> list[str]:
    """Both classes overall, but only one slide holds an atypical one: whichever slide validates, one side of
    the split has a single class (seen by the trainer after the crops are cut: the cleanup takes them away)."""
    slides = write_slides(tmp_path / "slides", n=3)
    with ReviewStore(tmp_path / "r.sqlite") as store:
        for path in slides:
            slide = store.add_slide(path, mpp=0.25)
            store.add_annotations(slide, np.array([[10, 10, 40, 40], [60, 60, 90, 90]]), [MITOTIC_FIGURE] * 2,
                                  "gt.json", atypical=[0, 1 if path == slides[0] else 0])
    return ["--store", str(tmp_path / "r.sqlite"), "--val-fraction", "0.3"]


def _not_a_store(tmp_path: Path) -> list[str]:
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 50)
    return ["--store", str(tmp_path / "junk.sqlite")]


def _bad_init(tmp_path: Path) -> list[str]:
    build_store(tmp_path / "r.sqlite", write_slides(tmp_path / "slides"))
    (tmp_path / "model.safetensors").write_text("no weights here")
    return ["--store", str(tmp_path / "r.sqlite"), "--init", str(tmp_path / "model.safetensors")]


def _resume_with_a_store(tmp_path: Path) -> list[str]:
    return ["--store", str(tmp_path / "r.sqlite"), "--resume", str(tmp_path / "old-run")]


@pytest.mark.parametrize(("make", "message"), [
    (_no_subtypes, "no reviewed subtypes in"),
    (lambda p: ["--store", str(p / "missing.sqlite")], "review database not found"),
    (_moved_slide, "slide not found"),
    (_one_slide, "come from one slide"),
    (_all_normal, "is atypical"),
    (_validation_of_one_class, "split holds only one class"),
    (_not_a_store, "cannot use review database"),
    (_bad_init, "cannot read"),
    (_resume_with_a_store, "on --resume only --epochs can change"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(tmp_path, capsys, make, message):
    args = make(tmp_path)
    run = tmp_path / "run"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["train-atypical", *args, "--out", str(run), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not run.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_message_of_an_unreviewed_store_says_how_to_give_subtypes(tmp_path):
    """As a user sees it: one line on stderr, no traceback or warning, nothing written."""
    args = _no_subtypes(tmp_path)
    result = subprocess.run([sys.executable, "-m", "midog_viewer", "train-atypical", *args, "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "no reviewed subtypes in" in result.stderr and "press T" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_failure_in_an_existing_folder_takes_away_only_what_it_wrote(tmp_path, capsys):
    args = _validation_of_one_class(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert main(["train-atypical", *args, "--out", str(run), "--epochs", "1", "--quiet"]) == 2
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def test_on_a_real_slide_of_another_spacing_the_crop_is_the_detection_crop(shared_data, tmp_path):
    """CMU-1-Small-Region.svs is 0.499 µm/px: the crop is cut at the slide's spacing and resampled to the model's
    when read, giving what a detection there is scored on."""
    svs = shared_data / "slides" / "CMU-1-Small-Region.svs"
    db = tmp_path / "real.sqlite"
    centres = [(600.0, 800.0), (1500.0, 2000.0), (3.0, 5.0)]  # the last at the corner: padded as glass
    with ReviewStore(db) as store:
        slide = store.add_slide(svs)
        store.add_annotations(slide, np.array([[x - 10, y - 10, x + 10, y + 10] for x, y in centres]),
                              [MITOTIC_FIGURE] * 3, "gt.json", atypical=[1, 0, 1])
    model, cfg, figures, root, images = _crop_folder(db, tmp_path)
    slide = open_slide(svs)
    assert [float(row["mpp"]) for row in images] == pytest.approx([slide.mpp] * 3)
    for figure, image in zip(figures, images):
        cut = load_crop(root / image["file"], float(image["mpp"]), cfg.input_px, cfg.mpp)
        seen = detection_crop(slide, figure.x, figure.y, model)
        assert cut.shape == seen.shape == (3, cfg.input_px, cfg.input_px)
        assert torch.allclose(cut, seen, atol=1e-4), image["file"]  # both zoom x2 here: the same resampled pixels
