"""p_atypical of detections: a crop around each mitotic figure's centre, at the model's spacing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from atypical_fixtures import TINY, draw_crop

from midog_viewer.atypical.classify import atypical_scores, detection_crop
from midog_viewer.atypical.model import AtypicalConfig, AtypicalNet
from midog_viewer.classes import CLASS_NAMES
from midog_viewer.detect import Detections


class _Slide:
    """A slide in memory with ``read_region`` and ``mpp``, white outside as the real one."""

    def __init__(self, pixels: np.ndarray, mpp: float | None) -> None:
        self.pixels, self.mpp = pixels, mpp

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        H, W = self.pixels.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.pixels[y0:y1, x0:x1]
        return out


def test_the_crop_covers_the_models_field_of_view_at_any_slide_spacing():
    model = AtypicalNet(AtypicalConfig(**TINY))  # 32 px at 0.5 um/px: 16 um
    pixels = np.full((400, 400, 3), 200, np.uint8)
    pixels[190:210, 190:210] = 0  # a 20 px square at 0.25 um/px: 5 um, so 10 px for the model
    crop = detection_crop(_Slide(pixels, 0.25), 200, 200, model)
    assert crop.shape == (3, 32, 32)
    dark = (crop.mean(0) < 0.4).float()
    assert 8 ** 2 <= dark.sum() <= 12 ** 2 and dark[16, 16] == 1


def test_only_mitotic_figures_get_a_probability_and_it_matches_the_crop():
    torch.manual_seed(0)
    model = AtypicalNet(AtypicalConfig(**TINY))
    rng = np.random.default_rng(0)
    pixels = np.full((300, 300, 3), 230, np.uint8)
    pixels[100:164, 50:114] = draw_crop(rng, 1)
    slide = _Slide(pixels, 0.5)
    dets = Detections(np.array([[72, 122, 92, 142], [0, 0, 20, 20], [280, 280, 310, 310]], np.float32),
                      np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 0]), CLASS_NAMES)
    scores = atypical_scores(slide, dets, model)
    assert np.isnan(scores[1]) and 0 <= scores[0] <= 1 and 0 <= scores[2] <= 1  # edge crops are padded white
    from midog_viewer.atypical.model import predict_proba

    expected = predict_proba(model, detection_crop(slide, 82, 132, model)[None])[0]
    assert scores[0] == pytest.approx(float(expected), abs=1e-6)
    assert np.isnan(atypical_scores(slide, dets.select(np.array([1])), model)).all()
