"""Slides scanned at another pixel spacing than the model's are resampled tile by tile to the model's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detect_standins import DarkBlobModel, StandInSlide

from midog_viewer.detect import Detector, load_model, save_checkpoint
from midog_viewer.detect.config import CascadeConfig
from midog_viewer.detect.engine import DEMO_MODEL_PATH, resample_tile, resample_zoom
from midog_viewer.errors import ModelError


@pytest.mark.parametrize(
    ("slide_mpp", "model_mpp", "zoom"),
    [(0.5, 0.25, 2.0), (0.125, 0.25, 0.5), (0.2425, 0.25, 1.0), (0.227, 0.25, 1.0), (None, 0.25, 1.0),
     (0.5, None, 1.0), (0.0, 0.25, 1.0)],
)
def test_zoom_from_pixel_spacings(slide_mpp, model_mpp, zoom):
    assert resample_zoom(slide_mpp, model_mpp) == pytest.approx(zoom)


def test_resample_tile_reports_exact_scales():
    tile = torch.rand(3, 255, 256) * 255
    resized, (sx, sy) = resample_tile(tile, 2.0)
    assert resized.shape == (3, 510, 512) and (sx, sy) == (2.0, 2.0)
    shrunk, (sx, sy) = resample_tile(tile, 0.5)
    assert shrunk.shape == (3, 128, 128) and sx == 0.5 and sy == pytest.approx(128 / 255)


def _blob_detector(tiny_checkpoint, **kwargs) -> Detector:
    detector = Detector(tiny_checkpoint, device="cpu", score_thr=0.5, stain_normalize=False, batch_size=2, **kwargs)
    detector.model = DarkBlobModel()
    return detector


def test_a_20x_slide_is_enlarged_to_the_models_40x_and_boxes_come_back_in_slide_pixels(tiny_checkpoint):
    pixels = np.full((400, 960, 3), 255, np.uint8)
    pixels[100:125, 300:325] = 20  # 25 px at 0.5 µm/px: a 50 px figure at the model's 0.25 µm/px
    detector = _blob_detector(tiny_checkpoint)
    result = detector.detect(StandInSlide(pixels, mpp=0.5))
    seen = [shape for call in detector.model.calls for shape in call]
    # 256 px tiles of the slide reach the model as 512 px tiles (the last row/column may be shorter).
    assert max(h for h, _ in seen) == 512 and max(w for _, w in seen) == 512
    assert len(seen) == 10  # 960 x 400 in 256 px tiles with 32 px overlap: 5 columns x 2 rows
    assert len(result) == 1
    np.testing.assert_allclose(result.boxes[0], [300, 100, 325, 125], atol=0.5)


def test_a_blob_on_a_seam_of_resampled_tiles_is_reported_once(tiny_checkpoint):
    pixels = np.full((300, 600, 3), 255, np.uint8)
    pixels[50:70, 226:246] = 20  # tiles start at x 0 and x 224 (256 px read, 32 px overlap): inside both
    result = _blob_detector(tiny_checkpoint).detect(StandInSlide(pixels, mpp=0.5))
    assert len(result) == 1
    np.testing.assert_allclose(result.boxes[0], [226, 50, 246, 70], atol=0.5)


def test_resampling_can_be_turned_off_and_close_spacings_are_left_alone(tiny_checkpoint):
    pixels = np.full((400, 960, 3), 255, np.uint8)
    for mpp, resample in ((0.5, False), (0.23, True), (None, True)):
        detector = _blob_detector(tiny_checkpoint, resample=resample)
        detector.detect(StandInSlide(pixels, mpp=mpp))
        assert [shape for call in detector.model.calls for shape in call] == [(400, 512), (400, 512)]


def test_checkpoints_record_the_models_pixel_spacing(tiny_model, tiny_config, tmp_path):
    import dataclasses

    config = dataclasses.replace(tiny_config, mpp=0.5)
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors", config, {})
    assert load_model(path)[1].config.mpp == 0.5
    # Checkpoints written before the field existed are read as MIDOG's 0.25 µm/px.
    data = config.to_dict()
    del data["mpp"]
    assert CascadeConfig.from_dict(json.loads(json.dumps(data))).mpp == 0.25
    with pytest.raises(ModelError, match="pixel spacing"):
        dataclasses.replace(tiny_config, mpp=-1.0)


@pytest.mark.skipif(not DEMO_MODEL_PATH.is_file(), reason="demo model not shipped")
def test_the_demo_model_sees_figures_of_a_20x_field_at_the_size_it_learnt():
    """A synthetic 40x field shrunk to 20x: resampled, boxes are half the 40x size in slide pixels (25 px)."""
    from midog_viewer.synthetic import BOX_SIZE, make_hpf

    hpf = make_hpf(7, 512, 512)
    shrunk = torch.nn.functional.interpolate(
        torch.from_numpy(hpf.image[..., :3]).permute(2, 0, 1)[None].float(), size=(256, 256), mode="area"
    )[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    at_20x = StandInSlide(shrunk, mpp=0.5)
    found = Detector(DEMO_MODEL_PATH, device="cpu", score_thr=0.5).detect(at_20x)
    assert len(found) >= 2
    sides = np.r_[found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1]]
    assert np.median(sides) == pytest.approx(BOX_SIZE / 2, rel=0.25)
    # Every box lies in the 20x field's own pixel frame.
    assert found.boxes.min() >= 0 and found.boxes.max() <= 256
