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
from midog_viewer.evaluate import RADIUS_UM, f1_from_boxes
from midog_viewer.train.patches import RegionSource
from midog_viewer.train.sources import LabelledImage

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
    second_look: bool | None = None,
) -> list[Detections] | None:
    """Detections of ``model`` on every whole image (None when ``should_stop`` said so part-way), with the
    model's second look unless ``second_look`` is False."""
    detector = Detector.from_model(
        model, device=str(device), score_thr=SCORE_FLOOR, stain_normalize=stain_normalise, second_look=second_look
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
    radius_um: float = RADIUS_UM,
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


#: Mitotic figures per mm² in the labelled images of the MIDOG 2021 training set (1,721 in 150 images of
#: 301.9 mm² at 0.23/0.25 µm/px): the density a field-equivalent F1 assumes unless told otherwise.
REFERENCE_MITOSES_PER_MM2 = 5.7
#: Thresholds tried for a field-equivalent F1: a field's mitoses are rare, so high thresholds matter too.
FIELD_THRESHOLDS = CANDIDATE_THRESHOLDS + (0.95, 0.97, 0.99)


def field_scores(
    images: Sequence[LabelledImage],
    predictions: Sequence[Detections],
    score_threshold: float,
    mitoses_per_mm2: float = REFERENCE_MITOSES_PER_MM2,
) -> dict[str, Any]:
    """Recall, false positives per mm² and the F1 they imply on a field holding ``mitoses_per_mm2``.

    Crops centred on mitoses hold far more mitoses per area than a high-power field does, so their own F1
    flatters a model. Recall R and the false-positive rate per tissue area (FP/mm²) do not depend on how
    dense the mitoses are; on a field with density D they give TP = R·D, FN = (1 − R)·D and FP = FP/mm²
    per mm², so F1 = 2RD / (RD + D + FP/mm²). The crops' own MIDOG scores are kept as ``crop_*``.
    """
    scores = midog_scores(images, predictions, score_threshold)
    area_mm2 = sum(im.tissue_px * im.mpp**2 for im in images) / 1e6
    positives = scores["tp"] + scores["fn"]
    recall = scores["tp"] / positives if positives else 0.0
    fp_per_mm2 = scores["fp"] / area_mm2 if area_mm2 else 0.0
    density = float(mitoses_per_mm2)
    f1 = 2 * recall * density / (recall * density + density + fp_per_mm2) if density > 0 else 0.0
    return {
        **{f"crop_{k}": v for k, v in scores.items() if k in ("tp", "fp", "fn", "precision", "recall", "f1")},
        "f1": f1,
        "recall": recall,
        "fp_per_mm2": fp_per_mm2,
        "fp_per_image": scores["fp"] / len(images) if images else 0.0,
        "area_mm2": area_mm2,
        "field_mitoses_per_mm2": density,
        "images": len(images),
        "score_threshold": float(score_threshold),
    }


def field_scores_by_source(
    images: Sequence[LabelledImage], predictions: Sequence[Detections], score_threshold: float, mitoses_per_mm2: float
) -> dict[str, dict[str, Any]]:
    """:func:`field_scores` of each image source (``LabelledImage.source``) on its own."""
    groups: dict[str, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.source or "(unnamed)", []).append(i)
    return {
        name: field_scores([images[i] for i in index], [predictions[i] for i in index], score_threshold, mitoses_per_mm2)
        for name, index in sorted(groups.items())
    }


def tuned_field_scores(
    images: Sequence[LabelledImage], predictions: Sequence[Detections], mitoses_per_mm2: float
) -> dict[str, Any]:
    """The field scores at the threshold with the best field-equivalent F1 (the highest on ties), per source too."""
    best: dict[str, Any] | None = None
    for threshold in FIELD_THRESHOLDS:
        scores = field_scores(images, predictions, threshold, mitoses_per_mm2)
        if best is None or scores["f1"] >= best["f1"]:
            best = scores
    assert best is not None, "no candidate thresholds"
    return {**best, "per_source": field_scores_by_source(images, predictions, best["score_threshold"], mitoses_per_mm2)}


def validation_scores(
    model: torch.nn.Module,
    images: Sequence[LabelledImage],
    device: torch.device | str = "cpu",
    *,
    score_threshold: float | None = 0.5,
    stain_normalise: bool = True,
    field_mitoses_per_mm2: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """The MIDOG scores of ``model`` on ``images`` and the ``score_threshold`` they are taken at (None: the best
    of :data:`CANDIDATE_THRESHOLDS`); None when stopped part-way.

    With ``field_mitoses_per_mm2`` (for crop data sets) ``f1`` is the field-equivalent F1 of
    :func:`field_scores` at that density, and the scores are given per source as well.
    """
    predictions = predict_images(model, images, device, stain_normalise=stain_normalise, should_stop=should_stop)
    if predictions is None:
        return None
    if field_mitoses_per_mm2 is not None:
        if score_threshold is None:
            return tuned_field_scores(images, predictions, field_mitoses_per_mm2)
        return {
            **field_scores(images, predictions, score_threshold, field_mitoses_per_mm2),
            "per_source": field_scores_by_source(images, predictions, score_threshold, field_mitoses_per_mm2),
        }
    if score_threshold is None:
        return tuned_scores(images, predictions)
    return {**midog_scores(images, predictions, score_threshold), "score_threshold": float(score_threshold)}
