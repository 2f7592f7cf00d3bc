"""Validation during training: the MIDOG F1 of an in-memory model on whole validation images.

Each validation image goes through the detector's own inference path (:class:`~midog_viewer.detect.engine.
Detector`: Macenko fitted on the image, 512 px tiles with 64 px overlap, seams merged by NMS 0.5), so the
validation F1 is the F1 a user will see; its "mitotic figure" detections above the score threshold are
scored against the labelled mitotic figures with the MIDOG rule (hit within 7.5 µm).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from midog_viewer.detect.detections import Detections
from midog_viewer.detect.engine import Detector
from midog_viewer.evaluate import f1_from_boxes
from midog_viewer.train.dataset import LabelledImage, RegionSource

#: Detections below this score are dropped before scoring (thresholds for the F1 are chosen above it).
SCORE_FLOOR = 0.05


class _ImageAsSlide:
    """A labelled image seen as the slide the detector reads (size, pixel spacing, ``read_region``)."""

    def __init__(self, image: LabelledImage, source: RegionSource) -> None:
        self.width, self.height, self.mpp = image.width, image.height, image.mpp
        self._image, self._source = image, source

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._source.read(self._image, x, y, w, h)


def predict_images(
    model: torch.nn.Module,
    images: Sequence[LabelledImage],
    device: torch.device | str = "cpu",
    *,
    stain_normalise: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[Detections] | None:
    """Detections of ``model`` on every whole image (None when ``should_stop`` said so part-way)."""
    detector = Detector.from_model(
        model, device=str(device), score_thr=SCORE_FLOOR, stain_normalize=stain_normalise
    )
    source = RegionSource()
    predictions = []
    for image in images:
        if should_stop():
            return None
        predictions.append(detector.detect(_ImageAsSlide(image, source)))
    return predictions


def midog_scores(
    images: Sequence[LabelledImage],
    predictions: Sequence[Detections],
    score_threshold: float = 0.5,
    radius_um: float = 7.5,
) -> dict[str, Any]:
    """MIDOG TP/FP/FN, precision, recall and F1 of "mitotic figure" predictions scoring ≥ the threshold."""
    return f1_from_boxes(
        [im.boxes for im in images],
        [p.boxes for p in predictions],
        [im.mpp for im in images],
        radius_um,
        gt_labels_per_image=[im.labels for im in images],
        pred_labels_per_image=[p.labels for p in predictions],
        pred_scores_per_image=[p.scores for p in predictions],
        score_threshold=score_threshold,
    )


#: Score thresholds tried when a run chooses its operating point on the validation images.
CANDIDATE_THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.10, 0.15, ... 0.90


def tuned_scores(
    images: Sequence[LabelledImage], predictions: Sequence[Detections], thresholds: Sequence[float] = CANDIDATE_THRESHOLDS
) -> dict[str, Any]:
    """The MIDOG scores at the threshold with the highest F1 (the highest such threshold on ties), with it named.

    MIDOG entries choose their detection threshold on validation data the same way; the held-out F1 at the
    chosen threshold is then an honest figure, the validation F1 an optimistic one.
    """
    best: dict[str, Any] | None = None
    for threshold in thresholds:
        scores = midog_scores(images, predictions, threshold)
        if best is None or scores["f1"] >= best["f1"]:
            best = {**scores, "score_threshold": float(threshold)}
    assert best is not None, "no candidate thresholds"
    return best


def validation_scores(
    model: torch.nn.Module,
    images: Sequence[LabelledImage],
    device: torch.device | str = "cpu",
    *,
    score_threshold: float | None = 0.5,
    stain_normalise: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """The MIDOG scores of ``model`` on ``images`` and the ``score_threshold`` they are taken at (None: the best
    of :data:`CANDIDATE_THRESHOLDS`); None when stopped part-way."""
    predictions = predict_images(model, images, device, stain_normalise=stain_normalise, should_stop=should_stop)
    if predictions is None:
        return None
    if score_threshold is None:
        return tuned_scores(images, predictions)
    return {**midog_scores(images, predictions, score_threshold), "score_threshold": float(score_threshold)}
