"""Which shipped model detects what: the real-tissue model by default, the demo model for the synthetic sample."""

from __future__ import annotations

import pytest

from midog_viewer.detect.models import (
    DEMO_MODEL,
    REAL_MODEL,
    default_model_for,
    is_synthetic_image,
    model_tissue,
)


def test_the_synthetic_sample_gets_the_demo_model_and_real_images_the_real_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDOG_VIEWER_CACHE", str(tmp_path / "cache"))
    from midog_viewer.synthetic import sample_path

    sample = sample_path()
    assert is_synthetic_image(sample) and default_model_for(sample) is DEMO_MODEL
    elsewhere = tmp_path / sample.name  # the same name outside the generator's cache is somebody's image
    elsewhere.write_bytes(sample.read_bytes())
    assert not is_synthetic_image(elsewhere) and not is_synthetic_image(None)
    expected = REAL_MODEL if REAL_MODEL.path.is_file() else DEMO_MODEL
    assert default_model_for(elsewhere) is expected and default_model_for(None) is expected


def test_without_the_real_model_file_every_image_gets_the_demo_model(tmp_path, monkeypatch):
    import midog_viewer.detect.models as models

    monkeypatch.setattr(models, "REAL_MODEL", models.ShippedModel("real-tiny", "no-such-file.safetensors", "x", False))
    assert models.default_model_for(tmp_path / "slide.svs") is DEMO_MODEL


def test_a_models_tissue_comes_from_its_shipped_file_or_its_training_provenance(tmp_path):
    demo = model_tissue(DEMO_MODEL.path, {})
    assert demo.synthetic is True and "synthetic" in demo.tissue and demo.name == "demo-tiny"
    assert model_tissue(REAL_MODEL.path, {}).synthetic is False
    trained = model_tissue(tmp_path / "best.safetensors",
                           {"training_data": {"summary": "crops listed in objects.csv", "synthetic_only": False}})
    assert (trained.name, trained.tissue, trained.synthetic) == ("best", "crops listed in objects.csv", False)
    assert model_tissue(tmp_path / "x.pth", {}).synthetic is None


@pytest.mark.skipif(not DEMO_MODEL.path.is_file(), reason="demo model not shipped")
def test_detect_warns_when_a_synthetic_only_model_runs_on_a_real_image(shared_data, tmp_path, capsys):
    from midog_viewer.cli import main

    out = tmp_path / "out.json"
    status = main(["detect", str(shared_data / "tiles" / "wsidicom_test_tile.png"), "--model", str(DEMO_MODEL.path),
                   "--device", "cpu", "--out", str(out)])
    assert status == 0 and out.is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "synthetic" in warnings[0]


def test_stain_normalisation_follows_how_the_model_was_trained(tiny_checkpoint, tmp_path):
    import dataclasses

    from midog_viewer.detect import load_model
    from midog_viewer.detect.checkpoint import save_checkpoint
    from midog_viewer.detect.engine import Detector

    model, info = load_model(tiny_checkpoint)
    unnormalised = save_checkpoint(model, tmp_path / "plain.safetensors", info.config, {"stain_normalised": False})
    assert Detector(tiny_checkpoint, device="cpu").stain_normalize is True  # no record: normalised, as before
    assert Detector(unnormalised, device="cpu").stain_normalize is False
    assert Detector(unnormalised, device="cpu", stain_normalize=True).stain_normalize is True
    assert dataclasses.is_dataclass(info)
