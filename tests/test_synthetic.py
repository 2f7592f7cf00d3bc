"""The synthetic H&E generator: deterministic, well-formed ground truth, H&E colours, classes not separable by darkness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from midog_viewer.classes import HARD_NEGATIVE, MITOTIC_FIGURE
from midog_viewer.io import open_slide
from midog_viewer.synthetic import BOX_SIZE, make_hpf, sample_path


@pytest.fixture(scope="module")
def sample_field():
    """The built-in sample's field (seed 0, 2048 × 1536)."""
    return make_hpf(0)


@pytest.fixture(scope="module")
def small_fields():
    return [make_hpf(seed, 768, 512) for seed in range(6)]


def test_same_seed_same_field_other_seed_other_field():
    a, b, c = make_hpf(4, 512, 384), make_hpf(4, 512, 384), make_hpf(5, 512, 384)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes) and a.labels == b.labels
    assert not np.array_equal(a.image, c.image)


def test_shapes_boxes_and_labels(small_fields):
    for hpf in small_fields:
        assert hpf.image.shape == (512, 768, 3) and hpf.image.dtype == np.uint8
        assert hpf.boxes.dtype == np.float32 and hpf.boxes.shape == (len(hpf.labels), 4)
        assert set(hpf.labels) <= {MITOTIC_FIGURE, HARD_NEGATIVE} and MITOTIC_FIGURE in hpf.labels
        assert hpf.mpp == 0.25
        sizes = hpf.boxes[:, 2:] - hpf.boxes[:, :2]
        assert np.allclose(sizes, BOX_SIZE)
        assert (hpf.boxes[:, :2] >= 0).all() and (hpf.boxes[:, 2] <= 768).all() and (hpf.boxes[:, 3] <= 512).all()


def test_both_classes_appear_across_fields(small_fields):
    labels = [label for hpf in small_fields for label in hpf.labels]
    assert labels.count(MITOTIC_FIGURE) >= 10 and labels.count(HARD_NEGATIVE) >= 10


def test_colours_are_those_of_h_and_e(sample_field):
    image = sample_field.image.reshape(-1, 3).astype(np.float32)
    red, green, blue = image.mean(axis=0)
    assert red > blue > green  # pink-purple: eosin takes green, hematoxylin red and green
    dark = image[image.sum(axis=1) < 300]  # nuclei
    assert len(dark) > 0.05 * len(image)
    assert dark[:, 2].mean() > dark[:, 1].mean()  # hematoxylin is blue-purple


def test_each_box_holds_a_dark_object(small_fields):
    for hpf in small_fields:
        gray = hpf.image.mean(axis=2)
        for box in hpf.boxes.astype(int):
            centre = gray[box[1] + 10 : box[3] - 10, box[0] + 10 : box[2] - 10]
            assert centre.min() < 90


def _darkness(hpf):
    gray = hpf.image.astype(np.float32).mean(axis=2)
    out = []
    for box in hpf.boxes.astype(int):
        centre = np.sort(gray[box[1] + 10 : box[3] - 10, box[0] + 10 : box[2] - 10].ravel())
        out.append(centre[: len(centre) // 10].mean())
    return np.array(out)


def test_darkness_alone_does_not_separate_the_classes(small_fields):
    darkness = np.concatenate([_darkness(hpf) for hpf in small_fields])
    is_mitosis = np.array([label == MITOTIC_FIGURE for hpf in small_fields for label in hpf.labels])
    mitoses, imposters = darkness[is_mitosis], darkness[~is_mitosis]
    auc = (mitoses[:, None] < imposters[None, :]).mean()  # P(a mitosis is darker than an imposter)
    assert 0.2 < auc < 0.8


def test_rejects_a_field_too_small_for_a_box():
    with pytest.raises(ValueError, match="at least"):
        make_hpf(0, 60, 60)


def test_sample_path_writes_a_tiff_with_midog_json_once(tmp_path, monkeypatch, sample_field):
    monkeypatch.setenv("MIDOG_VIEWER_CACHE", str(tmp_path / "cache"))
    path = sample_path()
    assert path.parent == tmp_path / "cache" and path.suffix == ".tiff"
    truth = json.loads(path.with_suffix(".json").read_text())
    hpf = sample_field
    assert truth["images"][0] == {"file_name": path.name, "id": 1, "width": 2048, "height": 1536, "mpp": 0.25}
    assert {c["name"] for c in truth["categories"]} == {"mitotic figure", "not mitotic figure"}
    assert len(truth["annotations"]) == len(hpf.labels)
    first = truth["annotations"][0]
    assert first["bbox"] == pytest.approx(hpf.boxes[0].tolist(), abs=0.01)
    assert first["category_id"] == (1 if hpf.labels[0] == MITOTIC_FIGURE else 2)
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25)
        assert np.array_equal(slide.read_region(0, 0, 2048, 1536), hpf.image)
    stamp = path.stat().st_mtime_ns
    assert sample_path() == path and path.stat().st_mtime_ns == stamp  # not rewritten
    path.with_suffix(".json").unlink()
    assert sample_path() == path and path.with_suffix(".json").is_file()  # rewritten when missing
