"""Fixtures of the review-widget tests: a small synthetic HPF on disk, its slide layer, a stand-in detector."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from midog_viewer.classes import CLASS_NAMES, MITOTIC_FIGURE
from midog_viewer.detect.detections import Detections
from midog_viewer.review.store import ReviewStore

@pytest.fixture(scope="session")
def small_hpf(tmp_path_factory):
    """A 1024 × 768 synthetic field written as a TIFF (mpp 0.25) with its ground truth."""
    from midog_viewer.synthetic import make_hpf, write_hpf_tiff

    hpf = make_hpf(seed=3, width=1024, height=768)
    path = tmp_path_factory.mktemp("slides") / "small_hpf.tiff"
    write_hpf_tiff(hpf, path)
    return path, hpf


@dataclass
class _Batch:
    done: int
    total: int
    detections: Detections


class StandInDetector:
    """Finds what the ground truth says, plus each imposter as a low-score "mitotic figure": known answers.

    Two batches (left and right half of the region), so progressive drawing is exercised.
    """

    device_name = "CPU"
    stain_normalize = False
    tissue = None  # not a shipped model: no tissue to warn about
    model_mpp = None

    def zoom_for(self, slide) -> float:
        return 1.0

    def __init__(self, hpf) -> None:
        mitotic = np.array([label == MITOTIC_FIGURE for label in hpf.labels])
        boxes = np.asarray(hpf.boxes, dtype=np.float32)
        self.boxes = np.concatenate([boxes[mitotic], boxes[~mitotic] + 3])
        self.scores = np.concatenate([np.full(mitotic.sum(), 0.9), np.full((~mitotic).sum(), 0.6)]).astype(np.float32)
        self.labels = np.zeros(len(self.boxes), dtype=np.int64)
        self.calls: list[tuple[int, int, int, int]] = []
        self.tile_filters: list = []

    def iter_detect(self, slide, region, cancel: threading.Event | None = None, tile_filter=None):
        self.calls.append(tuple(int(v) for v in region))
        self.tile_filters.append(tile_filter)
        x, y, w, h = region
        cx = (self.boxes[:, 0] + self.boxes[:, 2]) / 2
        cy = (self.boxes[:, 1] + self.boxes[:, 3]) / 2
        inside = (cx >= x) & (cx < x + w) & (cy >= y) & (cy < y + h)
        halves = (inside & (cx < x + w / 2), inside & (cx >= x + w / 2))
        for done, half in enumerate(halves, start=1):
            if cancel is not None and cancel.is_set():
                return
            yield _Batch(done, 2, Detections(self.boxes[half], self.scores[half], self.labels[half], CLASS_NAMES))


@pytest.fixture()
def stand_in(small_hpf):
    return StandInDetector(small_hpf[1])


@pytest.fixture()
def review_store(tmp_path):
    with ReviewStore(tmp_path / "reviews.sqlite", reviewer="tester") as store:
        yield store


@pytest.fixture()
def review(make_napari_viewer, small_hpf, stand_in, review_store, qtbot):
    """A review dock on a fresh viewer with the small HPF open, detecting through the stand-in detector."""
    from midog_viewer._qt.review_widget import ReviewWidget

    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, detector=stand_in, store=review_store)
    qtbot.addWidget(widget)
    add_slide_layer(viewer, *small_hpf)
    return viewer, widget


def add_slide_layer(viewer, path, hpf=None):
    """Open a file as the slide layer the review widget looks for (a Slide in the metadata, scale in µm)."""
    from midog_viewer.io import open_slide

    slide = open_slide(path)
    metadata = {"slide": slide}
    if hpf is not None:
        metadata["ground_truth"] = {"boxes": hpf.boxes, "labels": list(hpf.labels)}
    return viewer.add_image(
        slide.levels, rgb=True, multiscale=True, scale=(slide.mpp, slide.mpp), metadata=metadata,
        name=path.stem,
    )

