"""Shipped files are found in the source tree first, then where a wheel installs them."""

from __future__ import annotations

from midog_viewer._resources import SOURCE_RESOURCES, resource_path
from midog_viewer.detect.engine import DEMO_MODEL_PATH
from midog_viewer.detect.stain import REFERENCE_PATH


def test_first_existing_root_wins_and_a_missing_file_names_the_source_path(tmp_path):
    source, installed = tmp_path / "source", tmp_path / "share"
    (installed / "models").mkdir(parents=True)
    (installed / "models" / "m.safetensors").write_bytes(b"x")
    assert resource_path("models", "m.safetensors", roots=(source, installed)) == installed / "models" / "m.safetensors"
    (source / "models").mkdir(parents=True)
    (source / "models" / "m.safetensors").write_bytes(b"y")
    assert resource_path("models", "m.safetensors", roots=(source, installed)) == source / "models" / "m.safetensors"
    assert resource_path("nope.json", roots=(source, installed)) == source / "nope.json"


def test_the_checkout_ships_the_demo_model_and_stain_reference():
    assert DEMO_MODEL_PATH == SOURCE_RESOURCES / "models" / "demo-tiny.safetensors" and DEMO_MODEL_PATH.is_file()
    assert REFERENCE_PATH.is_file()
