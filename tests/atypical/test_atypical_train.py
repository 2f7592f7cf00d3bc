"""train_atypical: the split by slide, the run folder, the tuned threshold, and resume after a cancel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from atypical_fixtures import TINY
from safetensors.torch import load_file

from midog_viewer.atypical.data import labelled_crops, split_crops
from midog_viewer.atypical.model import AtypicalConfig, load_classifier
from midog_viewer.atypical.train import AtypicalRecipe, train_atypical
from midog_viewer.errors import TrainingError
from midog_viewer.train.sources import LabelledImage
from midog_viewer.train.splits import split_by_slide
from midog_viewer.train.progress import read_progress


def test_only_the_centred_object_is_rated_and_slides_stay_on_one_side(crop_folder):
    crops = labelled_crops(crop_folder)
    assert len(crops) == 6 * 6 + 8  # off-centre objects are not crops of their own
    assert {c.file: c.atypical for c in crops}["amibr/0_1.png"] == 0  # the centre's rating, not the corner's
    train, val = split_crops(crops, 0.4, seed=0)
    train_slides = {c.slide for c in train if c.slide}
    val_slides = {c.slide for c in val if c.slide}
    assert train_slides and val_slides and not train_slides & val_slides
    assert {c.file for c in train}.isdisjoint(c.file for c in val)
    assert split_crops(crops, 0.4, seed=0) == (train, val)  # reproducible


def test_slide_less_crops_stay_in_training_as_the_detectors_split_keeps_them(crop_folder):
    """AtNorM-MD has no slide column: its crops may share slides, so none may validate (no leak by slide)."""
    crops = labelled_crops(crop_folder)
    train, val = split_crops(crops, 0.4, seed=0)
    assert {c.source for c in val} == {"AMi-Br/X"}
    assert {c.file for c in crops if not c.slide} <= {c.file for c in train}
    images = [LabelledImage(c.file, np.array([[0, 0, 8, 8]]), np.array([0]), 64, 64, 0.5, slide=c.slide, source=c.source)
              for c in crops]  # the same items as the detector's training images: one rule, one split
    assert [im.key for im in split_by_slide(images, 0.4, seed=0)[1]] == [c.file for c in val]


def test_a_run_writes_a_model_with_its_validation_threshold(tiny_run):
    assert tiny_run.status == "done" and tiny_run.epochs_done == 3
    model, provenance = load_classifier(tiny_run.model_path)
    assert model.config.threshold == pytest.approx(tiny_run.threshold)
    assert provenance["validation"]["threshold"] == pytest.approx(tiny_run.threshold)
    metrics = json.loads((tiny_run.run_dir / "metrics.json").read_text())
    per_source = metrics["final_tta"]["per_source"]
    assert set(per_source) == {"AMi-Br/X"}  # the slide-less source trains only (it cannot be split by slide)
    assert all(0 <= s["auroc"] <= 1 for s in per_source.values())
    events = [e["event"] for e in read_progress(tiny_run.run_dir)]
    assert events[0] == "start" and events[-1] == "done" and events.count("epoch") == 3


def test_a_second_run_into_the_same_folder_is_refused(tiny_run, crop_folder):
    with pytest.raises(TrainingError, match="already holds a run"):
        train_atypical(crop_folder, tiny_run.run_dir, config=AtypicalConfig(**TINY))


@pytest.mark.slow
def test_cancel_then_resume_ends_where_an_uninterrupted_run_ends(crop_folder, tmp_path):
    recipe = AtypicalRecipe(epochs=2, batch_size=8, val_fraction=0.4, log_every=1)
    cfg = AtypicalConfig(**{**TINY, "dropout": 0.3})
    whole = train_atypical(crop_folder, tmp_path / "whole", recipe=recipe, config=cfg)
    calls = {"n": 0}

    def stop_after_five() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    cut = train_atypical(crop_folder, tmp_path / "cut", recipe=recipe, config=cfg, should_stop=stop_after_five)
    assert cut.status == "cancelled" and 0 < cut.step < whole.step
    resumed = train_atypical(None, tmp_path / "cut", resume=tmp_path / "cut")
    assert resumed.status == "done" and resumed.step == whole.step
    a, b = load_file(str(whole.model_path)), load_file(str(resumed.model_path))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert resumed.threshold == pytest.approx(whole.threshold)


def test_resume_of_a_folder_that_is_no_run_is_one_error(tmp_path):
    with pytest.raises(TrainingError, match="not an atypical run folder"):
        train_atypical(None, tmp_path, resume=tmp_path)


def test_a_folder_without_the_tables_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="images.csv and objects.csv"):
        train_atypical(tmp_path, tmp_path / "run")


def test_state_run_and_metrics_files_are_written_atomically(crop_folder, tmp_path, monkeypatch):
    from midog_viewer.formats import atomic

    written, real_open = [], atomic.open_binary
    monkeypatch.setattr(atomic, "open_binary",
                        lambda path, *a, **k: written.append(Path(path).name) or real_open(path, *a, **k))
    recipe = AtypicalRecipe(epochs=1, batch_size=8, val_fraction=0.4, log_every=2)
    train_atypical(crop_folder, tmp_path / "run", recipe=recipe, config=AtypicalConfig(**TINY))
    assert {"state.pt", "run.json", "metrics.json"} <= set(written)  # fsynced, never a half file
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
