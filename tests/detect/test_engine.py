"""The Detector over slide regions: seams, edges, small regions, cancellation, bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from detect_standins import DarkBlobModel, StandInSlide
from torch import nn

from midog_viewer.detect import Detections, Detector
from midog_viewer.detect.engine import DEMO_MODEL_PATH, choose_device
from midog_viewer.errors import ModelError, SlideError


def _slide_with_blob(width, height, x0, y0, size=40):
    pixels = np.full((height, width, 3), 255, np.uint8)
    pixels[y0 : y0 + size, x0 : x0 + size] = 20
    return StandInSlide(pixels)


@pytest.fixture
def blob_detector(tiny_checkpoint):
    detector = Detector(tiny_checkpoint, device="cpu", score_thr=0.5, stain_normalize=False, batch_size=2)
    detector.model = DarkBlobModel()
    return detector


def test_a_mitosis_on_a_tile_seam_is_reported_once(blob_detector):
    # Tiles start at x = 0 and x = 448: the blob at x 460..500 lies wholly inside both.
    slide = _slide_with_blob(960, 400, 460, 100)
    result = blob_detector.detect(slide)
    assert len(blob_detector.model.calls[0]) == 2  # both tiles ran
    assert len(result) == 1
    assert result.boxes[0].tolist() == [460, 100, 500, 140]
    assert result.label_names() == ["mitotic figure"]


def test_a_mitosis_cut_by_a_tile_border_is_reported_once_and_whole(blob_detector):
    # Tile 0 spans x 0..512 and sees only x 490..512 of the blob; tile 1 (x 448..960) sees all of it.
    # The two copies overlap with IoU 0.44, below NMS's 0.5: the tile cores keep just the whole one.
    slide = _slide_with_blob(960, 400, 490, 100, size=50)
    result = blob_detector.detect(slide)
    assert result.boxes.tolist() == [[490, 100, 540, 150]]


def test_regions_at_the_slide_edge_and_smaller_than_a_tile(blob_detector):
    slide = _slide_with_blob(700, 600, 660, 560)  # the blob touches the bottom-right corner
    result = blob_detector.detect(slide, region=(600, 500, 300, 300))  # reaches past the slide: clipped
    assert result.boxes.tolist() == [[660, 560, 700, 600]]
    assert blob_detector.model.calls[-1] == [(100, 100)]  # one tile, only the part inside the slide
    assert len(blob_detector.detect(slide, region=(0, 0, 200, 200))) == 0


def test_region_outside_the_slide_and_empty_region(blob_detector):
    slide = _slide_with_blob(300, 300, 10, 10)
    with pytest.raises(SlideError, match="outside the slide"):
        blob_detector.detect(slide, region=(400, 0, 50, 50))
    with pytest.raises(SlideError, match="empty"):
        blob_detector.detect(slide, region=(0, 0, 0, 10))


def test_non_rgb_slide_is_a_slide_error(blob_detector):
    slide = StandInSlide(np.zeros((100, 100), np.uint16))
    with pytest.raises(SlideError, match="not 8-bit RGB"):
        blob_detector.detect(slide)


def test_progress_per_batch_and_cancel(blob_detector):
    slide = _slide_with_blob(1400, 900, 460, 100)
    progress = list(blob_detector.iter_detect(slide))
    assert [p.done for p in progress] == [2, 4, 6]
    assert all(p.total == 6 for p in progress)
    assert isinstance(progress[0].detections, Detections)
    assert len(progress[-1].merged) == 1
    # merge-safe: the batches' detections added together are the final result
    assert len(Detections.concatenate([p.detections for p in progress])) == 1
    cancel = threading.Event()
    seen = []
    for item in blob_detector.iter_detect(slide, cancel=cancel):
        seen.append(item)
        cancel.set()
    assert len(seen) == 1


def test_score_threshold_filters(tiny_checkpoint):
    detector = Detector(tiny_checkpoint, device="cpu", score_thr=0.95, stain_normalize=False)
    detector.model = DarkBlobModel()
    assert len(detector.detect(_slide_with_blob(300, 300, 10, 10))) == 0


def test_real_model_with_stain_normalisation_runs_on_a_region(tiny_checkpoint):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (300, 700, 3), dtype=np.uint8)
    detector = Detector(tiny_checkpoint, device="cpu", score_thr=0.0, stain_normalize=True)
    assert detector.device_name == "CPU"
    result = detector.detect(StandInSlide(pixels), region=(50, 20, 640, 260))
    assert result.boxes.dtype == np.float32
    if len(result):
        assert result.boxes[:, 0].min() >= 50 and result.boxes[:, 2].max() <= 690
        assert result.boxes[:, 1].min() >= 20 and result.boxes[:, 3].max() <= 280


def test_bad_model_settings(tiny_checkpoint, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        Detector(tmp_path / "missing.safetensors", device="cpu")
    with pytest.raises(ModelError, match="batch size"):
        Detector(tiny_checkpoint, device="cpu", batch_size=0)
    with pytest.raises(ModelError, match="score threshold must lie between 0 and 1"):
        Detector(tiny_checkpoint, device="cpu", score_thr=2.0)
    with pytest.raises(ModelError, match="unknown device|unsupported device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA"):
            choose_device("cuda")
    assert choose_device("cpu").type == "cpu"
    if not DEMO_MODEL_PATH.is_file():
        with pytest.raises(ModelError, match="demo model"):
            Detector(device="cpu")


def test_stains_are_fitted_once_per_region_not_per_tile(blob_detector, monkeypatch):
    from midog_viewer.detect import stain

    fits = []
    original = stain.MacenkoNormalizer.fit
    monkeypatch.setattr(stain.MacenkoNormalizer, "fit", lambda self, rgb: fits.append(rgb.shape) or original(self, rgb))
    blob_detector.stain_normalize = True
    slide = _slide_with_blob(1400, 900, 460, 100)
    assert len(blob_detector.detect(slide)) == 1
    assert len(fits) == 1


def test_a_real_slide_region(tiny_checkpoint, shared_data):
    from midog_viewer import io  # our own reader: a failure to import it is a failure, not a skip

    with io.open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        detector = Detector(tiny_checkpoint, device="cpu", score_thr=0.0, batch_size=2)
        result = detector.detect(slide, region=(2000, 2800, 400, 400))  # reaches past the right and bottom edges
    assert len(result) <= detector.model.config.test_max_per_img
    if len(result):
        assert result.boxes[:, 2].max() <= slide.width and result.boxes[:, 3].max() <= slide.height


def test_detector_from_a_model_in_memory(tiny_model):
    detector = Detector.from_model(tiny_model, device="cpu", score_thr=0.0, stain_normalize=False, batch_size=1)
    assert detector.info.format == "in-memory" and detector.class_names == ("mitotic figure", "hard negative")
    pixels = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    assert isinstance(detector.detect(StandInSlide(pixels)), Detections)


class OutOfMemoryAbove(nn.Module):
    """Stands in for a network on a small GPU: batches larger than ``limit`` run out of memory."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.inner = DarkBlobModel()

    def forward(self, images):
        if len(images) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (stand-in)")
        return self.inner(images)


def test_out_of_memory_retries_with_smaller_batches_then_gives_up(blob_detector):
    slide = _slide_with_blob(1400, 900, 460, 100)
    blob_detector.batch_size = 4
    blob_detector.model = OutOfMemoryAbove(limit=1)
    assert len(blob_detector.detect(slide)) == 1
    assert blob_detector.batch_size == 1
    assert all(len(call) == 1 for call in blob_detector.model.inner.calls)
    blob_detector.model = OutOfMemoryAbove(limit=0)
    with pytest.raises(ModelError, match="out of memory .* even with one tile"):
        blob_detector.detect(slide)
