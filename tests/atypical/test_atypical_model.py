"""The classifier checkpoint: weights only, config in the header, validated before the network is built."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from midog_viewer.atypical.model import (FORMAT_NAME, AtypicalConfig, AtypicalNet, dihedral, load_classifier,
                                         predict_proba, save_classifier)
from midog_viewer.errors import ModelError

from atypical_fixtures import TINY


def test_round_trip_gives_the_same_probabilities_and_config(tmp_path):
    torch.manual_seed(0)
    model = AtypicalNet(AtypicalConfig(**{**TINY, "threshold": 0.37}))
    path = save_classifier(model, tmp_path / "m.safetensors", {"note": "test"})
    loaded, provenance = load_classifier(path)
    assert provenance == {"note": "test"} and loaded.config == model.config and loaded.config.threshold == 0.37
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(predict_proba(model, x), predict_proba(loaded, x))
    assert not list(tmp_path.glob("*.tmp"))


def test_tta_is_invariant_to_rotations_and_flips():
    torch.manual_seed(0)
    model = AtypicalNet(AtypicalConfig(**{**TINY, "tta": True}))
    x = torch.rand(2, 3, 32, 32)
    reference = predict_proba(model, x)
    for view in dihedral(x):
        assert torch.allclose(predict_proba(model, view), reference, atol=1e-6)


def _rewrite(path, out, **metadata):
    with open(path, "rb"):
        pass
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta.update(metadata)
    save_file(load_file(str(path)), str(out), metadata=meta)
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "midog-viewer/cascade-rcnn"}, "not a midog-viewer atypical-classifier"),
        ({"format_version": "99"}, "format version"),
        ({"config": "{not json"}, "not valid JSON"),
        ({"config": json.dumps({**json.loads(AtypicalConfig(**TINY).to_json()), "widths": [4, -8]})}, "widths"),
        ({"config": json.dumps({**json.loads(AtypicalConfig(**TINY).to_json()), "threshold": 2})}, "threshold"),
        ({"config": json.dumps({**json.loads(AtypicalConfig(**TINY).to_json()), "exec": "rm"})}, "unknown"),
        ({"config": json.dumps({**json.loads(AtypicalConfig(**TINY).to_json()), "widths": [4, 16]})}, "wrong shapes"),
    ],
)
def test_a_bad_header_is_one_model_error(tmp_path, change, message):
    path = save_classifier(AtypicalNet(AtypicalConfig(**TINY)), tmp_path / "m.safetensors")
    bad = _rewrite(path, tmp_path / "bad.safetensors", **change)
    with pytest.raises(ModelError, match=message):
        load_classifier(bad)


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(ModelError, match="cannot read"):
        load_classifier(junk)
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelError, match="not a midog-viewer atypical-classifier"):
        load_classifier(plain)
    assert FORMAT_NAME == "midog-viewer/atypical-classifier"


def test_the_shipped_model_loads_and_records_a_validation_threshold():
    model, provenance = load_classifier()
    assert 0.0 < model.config.threshold < 1.0
    assert provenance["threshold_chosen_on"] == "validation balanced accuracy"
    assert model.config.mpp == 0.25
