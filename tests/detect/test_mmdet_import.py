"""The mmdet importer: reference equivalence, the X101-64x4d key map, hostile pickles, malformed configs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from midog_viewer.detect import CascadeConfig, build_cascade_rcnn, load_model
from midog_viewer.detect.mmdet_import import config_from_mmdet, map_mmdet_key, read_mmdet_config
from midog_viewer.errors import ModelError


@pytest.fixture(scope="module")
def reference(shared_data):
    folder = shared_data / "mmdet_reference"
    model, info = load_model(folder / "cascade_r18_tiny.pth", folder / "cascade_r18_tiny.py")
    with (folder / "reference_outputs.json").open() as handle:
        outputs = json.load(handle)
    return folder, model, info, outputs


def test_reference_config_is_read_as_data(reference):
    _, _, info, outputs = reference
    cfg = info.config
    assert cfg.backbone == "resnet18" and cfg.backbone_stages == 4 and cfg.fpn_channels == 64
    assert cfg.fc_channels == 128 and cfg.test_score_thr == outputs["test_cfg"]["rcnn"]["score_thr"]
    assert [list(s) for s in cfg.stage_target_stds] == outputs["bbox_coder_target_stds_per_stage"]
    assert cfg.class_names == ("mitotic figure", "hard negative")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_outputs_match_mmdet(reference, index):
    folder, model, _, outputs = reference
    record = outputs["images"][index]
    pixels = np.array(Image.open(folder / f"input_{index}.png").convert("RGB"))
    image = torch.from_numpy(pixels).permute(2, 0, 1).float()
    with torch.no_grad():
        batch, sizes = model.preprocess([image])
        assert batch.sum().item() == pytest.approx(record["preprocessed_input"]["sum"], rel=1e-5)
        features = model.backbone(batch)
        logits, deltas = model.rpn(features)
        proposals, proposal_scores = model.rpn.proposals(logits, deltas, model.rpn.anchors(features), sizes, False)[0]
        result = model([image])[0]
    # RPN proposals as sets: each of mmdet's proposals has an identical one of ours (near-ties may swap ranks).
    expected_proposals = torch.tensor(record["rpn_proposals"]["bboxes"])
    assert proposals.shape == expected_proposals.shape
    best_iou, best = box_iou(expected_proposals, proposals).max(dim=1)
    matched = best_iou > 0.999
    assert matched.float().mean() >= 0.995
    assert (proposals[best[matched]] - expected_proposals[matched]).abs().max() < 0.01
    expected_scores = torch.tensor(record["rpn_proposals"]["scores"])
    assert (proposal_scores[best[matched]] - expected_scores[matched]).abs().max() < 1e-4
    # Final detections as matched sets: one to one, each of mmdet's has one of ours with the same label, box
    # (0.01 px) and score (1e-4). Ours are sorted by score, so ranks can differ only between near-ties.
    expected = record["pred_instances"]
    assert result["boxes"].shape[0] == expected["num"]
    assert result["scores"].diff().le(0).all()
    pairs = _match_detections(result, expected, box_tol=0.01, score_tol=1e-4)
    assert len(pairs) == expected["num"], f"only {len(pairs)} of {expected['num']} mmdet detections matched"


def _match_detections(ours: dict, expected: dict, box_tol: float, score_tol: float) -> dict[int, int]:
    """A maximum one-to-one matching (Kuhn's augmenting paths) of mmdet's detections to ours: reference → ours."""
    boxes, scores, labels = ours["boxes"], ours["scores"], ours["labels"]
    ref_boxes, ref_scores = torch.tensor(expected["bboxes"]), torch.tensor(expected["scores"])
    ref_labels = torch.tensor(expected["labels"])
    fits = (
        ((ref_boxes[:, None, :] - boxes[None, :, :]).abs().amax(dim=2) < box_tol)
        & ((ref_scores[:, None] - scores[None, :]).abs() < score_tol)
        & (ref_labels[:, None] == labels[None, :])
    )
    candidates = [row.nonzero().flatten().tolist() for row in fits]
    owner: dict[int, int] = {}  # ours → reference

    def augment(ref: int, seen: set[int]) -> bool:
        for j in candidates[ref]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = ref
                    return True
        return False

    for ref in range(len(candidates)):
        augment(ref, set())
    return {ref: j for j, ref in owner.items()}


def test_matched_sets_ignore_tie_order_but_not_a_wrong_detection():
    expected = {"bboxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "scores": [0.5, 0.5], "labels": [0, 1]}
    swapped = {"boxes": torch.tensor([[20.0, 20, 30, 30], [0, 0, 10, 10]]), "scores": torch.tensor([0.5, 0.5]),
               "labels": torch.tensor([1, 0])}
    assert _match_detections(swapped, expected, 0.01, 1e-4) == {0: 1, 1: 0}
    for key, value in (("boxes", torch.tensor([[20.0, 20, 30, 30], [0, 0, 10, 10.02]])),
                       ("scores", torch.tensor([0.5, 0.5002])), ("labels", torch.tensor([1, 1]))):
        wrong = dict(swapped, **{key: value})
        assert len(_match_detections(wrong, expected, 0.01, 1e-4)) == 1, key
    twice = {"bboxes": [[0, 0, 10, 10], [0, 0, 10, 10]], "scores": [0.5, 0.5], "labels": [0, 0]}
    one = {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), "scores": torch.tensor([0.5, 0.5]),
           "labels": torch.tensor([0, 0])}
    assert len(_match_detections(one, twice, 0.01, 1e-4)) == 1


def test_every_x101_key_maps_onto_our_model(shared_data):
    listing = json.loads((shared_data / "mmdet_reference" / "state_dict_keys_x101.json").read_text())
    with torch.device("meta"):
        model = build_cascade_rcnn(CascadeConfig.named("x101-64x4d"))
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    mapped = {}
    for entry in listing["keys"]:
        name = map_mmdet_key(entry["key"])
        assert name is not None, entry["key"]
        assert ours.get(name) == tuple(entry["shape"]), (entry["key"], name)
        mapped[name] = entry["key"]
    assert len(listing["keys"]) == listing["n_keys"] == 670
    assert set(mapped) == set(ours)


def test_a_pickle_that_would_create_a_file_is_refused(tmp_path):
    victim = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {victim}",))

    class OpenPayload:
        def __reduce__(self):
            return (open, (str(victim), "w"))

    for payload in (Payload(), OpenPayload()):
        path = tmp_path / "evil.pth"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"x": payload}}, path)
        with pytest.raises(ModelError, match="refusing to load .*(system|open)"):
            load_model(path)
        assert not victim.exists()


def test_runner_checkpoint_without_config_or_with_wrong_keys(tmp_path, shared_data):
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, bare)
    with pytest.raises(ModelError, match="carries no config"):
        load_model(bare)
    config = shared_data / "mmdet_reference" / "cascade_r18_tiny.py"
    with pytest.raises(ModelError, match="does not fit the model architecture.*missing keys"):
        load_model(bare, config)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"bbox_head.weird.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(ModelError, match="does not use: bbox_head.weird.weight"):
        load_model(foreign, config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model = dict(type='CascadeRCNN'\n", "not valid Python"),
        ("import os\nmodel = dict()", "only 'name = value'"),
        ("model = __import__('os').system('true')", "cannot be read as data"),
        ("model = dict(backbone=backbone)", "not assigned earlier"),
        ("_base_ = ['../a.py']\nmodel = dict()", "inherits from _base_"),
        ("model = [x for x in range(3)]", "ListComp"),
    ],
)
def test_malformed_configs_are_model_errors(tmp_path, text, message):
    path = tmp_path / "cfg.py"
    path.write_text(text)
    with pytest.raises(ModelError, match=message):
        read_mmdet_config(path)


def test_config_of_another_architecture_is_named(shared_data):
    data = read_mmdet_config(shared_data / "mmdet_reference" / "cascade_r18_tiny.py")
    data["model"]["type"] = "FasterRCNN"
    with pytest.raises(ModelError, match="FasterRCNN is not CascadeRCNN|'FasterRCNN' is not CascadeRCNN"):
        config_from_mmdet(data)
    data = read_mmdet_config(shared_data / "mmdet_reference" / "cascade_r18_tiny.py")
    data["model"]["roi_head"]["bbox_head"][1]["reg_class_agnostic"] = False
    with pytest.raises(ModelError, match="class-specific box regression"):
        config_from_mmdet(data)
    del data["model"]["test_cfg"]
    data["model"]["roi_head"]["bbox_head"][1]["reg_class_agnostic"] = True
    with pytest.raises(ModelError, match="incomplete or malformed"):
        config_from_mmdet(data)


def test_config_reader_accepts_names_arithmetic_and_splats(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("'''doc'''\nbase = dict(a=1, b=-2)\nmodel = dict(**base, c=1 / 9, d=[base], e=(1, 2))\n")
    data = read_mmdet_config(path)
    assert data["model"] == {"a": 1, "b": -2, "c": 1 / 9, "d": [{"a": 1, "b": -2}], "e": (1, 2)}
