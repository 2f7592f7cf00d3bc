"""Our safetensors checkpoint: round trip, metadata, refusal of files that do not fit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from midog_viewer.detect import CascadeConfig, build_cascade_rcnn, load_model, save_checkpoint
from midog_viewer.errors import ModelError


def test_round_trip_gives_identical_outputs(tiny_model, tiny_config, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors", tiny_config, {"trained_on": "nothing", "iters": 0})
    loaded, info = load_model(path)
    assert info.format == "midog-safetensors"
    assert info.config == tiny_config
    assert info.provenance == {"trained_on": "nothing", "iters": 0}
    assert info.class_names == ("mitotic figure", "hard negative")
    image = [torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255]
    tiny_model.eval()
    with torch.no_grad():
        expected, actual = tiny_model(image)[0], loaded(image)[0]
    assert torch.equal(expected["boxes"], actual["boxes"]) and torch.equal(expected["scores"], actual["scores"])
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["class_names"]) == ["mitotic figure", "hard negative"]
    assert json.loads(metadata["normalization"])["channel_order"] == "RGB"


def test_missing_file_and_foreign_safetensors_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelError, match="not a midog-viewer checkpoint"):
        load_model(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a model file at all")
    with pytest.raises(ModelError, match="cannot read"):
        load_model(garbage)


def test_weights_of_another_architecture_are_named(tiny_config, tmp_path):
    other = CascadeConfig.named("tiny")
    other.fc_channels = 64
    model = build_cascade_rcnn(other)
    path = tmp_path / "other.safetensors"
    save_checkpoint(model, path, other, {})
    # Lie about the config in the header: the weights no longer fit and the message says which.
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata["config"] = tiny_config.to_json()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelError, match="wrong shapes: roi_heads.stages"):
        load_model(path)


def test_save_refuses_other_suffixes(tiny_model, tiny_config, tmp_path):
    with pytest.raises(ModelError, match=".safetensors"):
        save_checkpoint(tiny_model, tmp_path / "m.pth", tiny_config, {})


def test_the_detector_starts_from_the_checkpoints_operating_point(tiny_model, tiny_config, tmp_path):
    import dataclasses

    from midog_viewer.detect import Detector

    tuned = dataclasses.replace(tiny_config, score_threshold=0.35)
    path = save_checkpoint(tiny_model, tmp_path / "tuned.safetensors", tuned, {})
    assert Detector(path, device="cpu").score_thr == 0.35
    assert Detector(path, device="cpu", score_thr=0.6).score_thr == 0.6  # an explicit threshold wins
    with pytest.raises(ModelError, match="score threshold"):
        dataclasses.replace(tiny_config, score_threshold=1.5)
