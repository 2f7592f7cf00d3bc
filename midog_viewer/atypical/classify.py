"""p_atypical of crop files and of detections on a slide, with a loaded atypical classifier.

Crops are brought to the model's µm/px (a crop's spacing is given by the caller, else taken as the
model's); around a detection, a square of the model's field of view is read at the slide's spacing and
resampled, so a mitosis has the size in pixels the model learnt. Crop files are checked before any work and
scored in batches; the CSV is written atomically.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from midog_viewer.atypical.data import centre_square, check_image, field_of_view, read_rgb, to_spacing
from midog_viewer.atypical.model import AtypicalNet, load_classifier, predict_proba
from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.errors import AnnotationFormatError, SlideError
from midog_viewer.formats import atomic
from midog_viewer.io import IMAGE_SUFFIXES

#: Crops scored per forward pass.
BATCH = 64
#: Columns of ``classify-atypical``'s CSV.
CSV_COLUMNS = ("file", "p_atypical", "atypical")


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """The files named, and the image files (by ending) inside the folders named, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise SlideError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise SlideError(f"{path} does not exist.")
    return found


@functools.lru_cache(maxsize=2)
def shared_classifier(path: str | None = None) -> AtypicalNet:
    """The classifier at ``path`` (None: the shipped one), loaded once per process for every detection run."""
    return load_classifier(path)[0]


def _as_model(model: AtypicalNet | str | Path | None) -> AtypicalNet:
    return model if isinstance(model, AtypicalNet) else load_classifier(model)[0]


def _score(model: AtypicalNet, crops: Iterable[torch.Tensor], device: str | torch.device = "cpu") -> list[float]:
    model = model.to(device)
    out: list[float] = []
    batch: list[torch.Tensor] = []
    for crop in crops:
        batch.append(crop)
        if len(batch) == BATCH:
            out.extend(predict_proba(model, torch.stack(batch).to(device)).cpu().tolist())
            batch = []
    if batch:
        out.extend(predict_proba(model, torch.stack(batch).to(device)).cpu().tolist())
    return out


def classify_files(files: Sequence[Path], model_path: str | Path | None = None, mpp: float | None = None,
                   device: str = "cpu", model: AtypicalNet | None = None) -> list[dict[str, Any]]:
    """One row per file: file, p_atypical, atypical (0/1 at the model's threshold).

    Every file's header is checked first (nothing decoded, no model loaded), so a bad file raises before
    any work; then crops are decoded and scored ``BATCH`` at a time, never all held in memory at once.
    """
    if mpp is not None and not (0.01 <= mpp <= 10):
        raise SlideError(f"--mpp {mpp} is not a microscope pixel spacing (0.01-10 µm/px).")
    for file in files:
        check_image(file)
    model = model if model is not None else _as_model(model_path)
    cfg = model.config
    crops = (centre_square(to_spacing(read_rgb(f), mpp, cfg.mpp), cfg.input_px) for f in files)
    scores = _score(model, crops, device)
    return [{"file": str(f), "p_atypical": round(p, 6), "atypical": int(p >= cfg.threshold)}
            for f, p in zip(files, scores)]


def csv_destination(out: str | Path) -> Path:
    """``out`` if it can take the CSV (ends in .csv, its folder exists); checked before any work."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise AnnotationFormatError(f"--out must end in .csv, not {out.name!r}.")
    if not out.parent.is_dir():
        raise AnnotationFormatError(f"cannot write {out}: folder {out.parent} does not exist.")
    return out


def write_csv(rows: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """Write the rows to ``out`` atomically (:mod:`~midog_viewer.formats.atomic`): whole or not at all."""
    out = csv_destination(out)
    with atomic.open_text(out, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return out


def detection_crop(slide: Any, cx: float, cy: float, model: AtypicalNet) -> torch.Tensor:
    """The model's input around level-0 point (cx, cy): its field of view read at the slide's spacing."""
    cfg = model.config
    rgb, slide_mpp = field_of_view(slide, cx, cy, cfg.input_px, cfg.mpp)
    return centre_square(to_spacing(rgb, slide_mpp, cfg.mpp), cfg.input_px)


def atypical_scores(slide: Any, detections: Any, model: AtypicalNet | str | Path | None = None,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """p_atypical per detection (NaN for those that are not a "mitotic figure"), from a crop around each centre."""
    model = _as_model(model)
    names = detections.label_names()
    wanted = [i for i, name in enumerate(names) if name == MITOTIC_FIGURE]
    scores = np.full(len(names), np.nan)
    if wanted:
        boxes = np.asarray(detections.boxes, dtype=np.float64)
        crops = (detection_crop(slide, (boxes[i, 0] + boxes[i, 2]) / 2, (boxes[i, 1] + boxes[i, 3]) / 2, model)
                 for i in wanted)
        scores[wanted] = _score(model, crops, device)
    return scores
