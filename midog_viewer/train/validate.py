"""Validation during training: the MIDOG F1 of an in-memory model on whole validation images.

Each validation image is run through the model in 512 px tiles (64 px overlap, duplicates on seams merged
by NMS 0.5, with the detector's own tiling), and its "mitotic figure" detections above the score threshold are scored
against the labelled mitotic figures with the MIDOG rule (hit within 7.5 µm).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from midog_viewer.detect.detections import Detections
from midog_viewer.detect.tiling import merge_detections, plan_tiles
from midog_viewer.evaluate import f1_from_boxes
from midog_viewer.train.dataset import LabelledImage, RegionSource


@torch.no_grad()
def predict_image(
    model: torch.nn.Module,
    read_region: Callable[[int, int, int, int], np.ndarray],
    width: int,
    height: int,
    device: torch.device | str = "cpu",
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    stain: Callable[[np.ndarray], np.ndarray] | None = None,
    nms_iou: float = 0.5,
) -> Detections:
    """Detections (level-0 xyxy) of the in-memory ``model`` over a whole image, seams merged by NMS."""
    model.eval()
    tiles = plan_tiles((0, 0, width, height), tile, overlap)
    parts = []
    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start : start + batch_size]
        images = []
        for x, y, w, h in chunk:
            pixels = read_region(x, y, w, h)
            if stain is not None:
                pixels = stain(pixels)
            images.append(torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().to(device))
        for (x, y, _, _), out in zip(chunk, model(images)):
            found = Detections(out["boxes"].float().cpu().numpy(), out["scores"].float().cpu().numpy(),
                               out["labels"].cpu().numpy())
            parts.append(found.translated(x, y))
    return merge_detections(Detections.concatenate(parts), nms_iou)


def predict_images(
    model: torch.nn.Module,
    images: Sequence[LabelledImage],
    device: torch.device | str = "cpu",
    *,
    stain: Callable[[LabelledImage, np.ndarray], np.ndarray] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[Detections] | None:
    """Detections of ``model`` on every image (None when ``should_stop`` said so part-way)."""
    source = RegionSource()
    predictions = []
    for image in images:
        if should_stop():
            return None
        fit = (lambda px, im=image: stain(im, px)) if stain is not None else None
        read = lambda x, y, w, h, im=image: source.read(im, x, y, w, h)  # noqa: E731
        predictions.append(predict_image(model, read, image.width, image.height, device, stain=fit))
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


def validation_scores(
    model: torch.nn.Module,
    images: Sequence[LabelledImage],
    device: torch.device | str = "cpu",
    *,
    score_threshold: float = 0.5,
    stain: Callable[[LabelledImage, np.ndarray], np.ndarray] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """The MIDOG scores of ``model`` on ``images`` (None when stopped part-way)."""
    predictions = predict_images(model, images, device, stain=stain, should_stop=should_stop)
    return None if predictions is None else midog_scores(images, predictions, score_threshold)
