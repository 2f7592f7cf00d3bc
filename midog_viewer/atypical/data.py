"""Crops for the atypical classifier: reading an image, bringing it to the model's spacing, the labelled set.

A crop is read as RGB, resampled by its µm/px to the model's (unknown spacing: taken as the model's),
and its centre ``input_px`` square is what the network sees. The labelled set is the ``real_mitosis``
folder layout (``images.csv`` + ``objects.csv``, the rated object at the crop centre); it is split by slide
with the detector's rule, so crops without a slide (AtNorM-MD) stay in training.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.errors import SlideError, TrainingError
from midog_viewer.train.splits import validation_by_slide

#: The sub-folder of crops cut from review stores (:mod:`midog_viewer.atypical.reviewed`).
REVIEWED_FOLDER = "reviewed"
#: Sub-folders of ``real_mitosis`` holding 128 px crops centred on a rated mitotic figure, and the reviewed crops'.
CROP_FOLDERS = ("amibr", "atnorm_md", REVIEWED_FOLDER)
#: Extra side (px at the model's spacing) kept around the input square for translation and scale jitter.
CONTEXT_MARGIN = 16


#: The PIL modes of 8-bit RGB or grey images, which a crop may be.
_EIGHT_BIT_MODES = ("RGB", "RGBA", "L", "P", "LA", "PA", "CMYK", "YCbCr", "RGBX", "1")


def _opened(path: Path, load: bool) -> Any:
    """The image at ``path``, opened (and decoded if ``load``) and checked: 8-bit, at least 8 x 8 px."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # a large image is refused or read, never a warning on stderr
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            if load:
                image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SlideError(f"{path} is not a readable image ({type(exc).__name__}).") from exc
    if image.mode not in _EIGHT_BIT_MODES:
        image.close()
        raise SlideError(f"{path} is a {image.mode} image; only 8-bit RGB or grey crops can be classified.")
    if image.width < 8 or image.height < 8:
        image.close()
        raise SlideError(f"{path} is too small ({image.width}x{image.height} px) to be a crop of a mitosis.")
    return image


def check_image(path: str | Path) -> None:
    """Refuse, from its header alone (nothing decoded), a file :func:`read_rgb` would refuse."""
    _opened(Path(path), load=False).close()


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; a file that is not an image raises :class:`SlideError`."""
    path = Path(path)
    image = _opened(path, load=True)
    try:
        with image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise SlideError(f"{path} is not a readable image ({type(exc).__name__}).") from exc


def to_spacing(rgb: np.ndarray, mpp: float | None, target_mpp: float) -> torch.Tensor:
    """(3, H', W') float 0..1 image resampled from ``mpp`` to ``target_mpp`` (unchanged when ``mpp`` unknown)."""
    image = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0
    if not mpp or abs(mpp / target_mpp - 1.0) < 1e-3:
        return image
    zoom = float(mpp) / float(target_mpp)
    height, width = image.shape[-2:]
    size = (max(1, round(height * zoom)), max(1, round(width * zoom)))
    return torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                                           antialias=zoom < 1.0)[0].clamp(0, 1)


def centre_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """The centred ``side`` square of a (3, H, W) image, reflect-padded when the image is smaller."""
    height, width = image.shape[-2:]
    pad_h, pad_w = max(0, side - height), max(0, side - width)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        image = torch.nn.functional.pad(image[None], (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2),
                                        mode=mode)[0]
        height, width = image.shape[-2:]
    top, left = (height - side) // 2, (width - side) // 2
    return image[:, top : top + side, left : left + side]


def field_of_view(slide: Any, cx: float, cy: float, input_px: int, target_mpp: float, margin: int = 0,
                  mpp: float | None = None) -> tuple[np.ndarray, float]:
    """The slide's pixels around level-0 point (cx, cy), at its own spacing, that cover the model's input square
    (``input_px + 2 * margin`` px at ``target_mpp``), and that spacing (``mpp``, else the slide's, else the
    model's). :func:`to_spacing` then :func:`centre_square` turn them into what the network sees; the one
    rule for a detection's crop and for a reviewed figure's training crop."""
    slide_mpp = float(mpp or getattr(slide, "mpp", None) or target_mpp)
    side = max(8, math.ceil((input_px + 2 * margin) * target_mpp / slide_mpp) + 2)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    return slide.read_region(x0, y0, side, side), slide_mpp


def load_crop(path: str | Path, mpp: float | None, input_px: int, target_mpp: float, margin: int = 0) -> torch.Tensor:
    """A crop file as the network's (3, S, S) input (``S = input_px + 2 * margin``) at ``target_mpp``."""
    return centre_square(to_spacing(read_rgb(path), mpp, target_mpp), input_px + 2 * margin)


@dataclass(frozen=True)
class LabelledCrop:
    """One rated crop: file, source, slide ('' if unknown), µm/px (None if unknown), atypical 0/1."""

    file: str
    source: str
    slide: str
    mpp: float | None
    atypical: int

    def slide_group(self) -> str:
        """The unit a split keeps together, as the detector's split names it ("" when the slide is unknown)."""
        return Path(self.slide).stem.lower() if self.slide else ""


def labelled_crops(root: str | Path, folders: Sequence[str] = CROP_FOLDERS) -> list[LabelledCrop]:
    """The rated crops of a ``real_mitosis`` folder: the mitotic figure at each crop's centre with its rating."""
    root = Path(root)
    images_csv, objects_csv = root / "images.csv", root / "objects.csv"
    if not images_csv.is_file() or not objects_csv.is_file():
        raise TrainingError(f"{root} has no images.csv and objects.csv (the real_mitosis layout).")
    images = {}
    with images_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["file"].split("/", 1)[0] in folders:
                images[row["file"]] = row
    crops = []
    with objects_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            image = images.get(row["file"])
            if image is None or row["label"] != MITOTIC_FIGURE or row.get("atypical", "") not in ("0", "1"):
                continue
            cx, cy = float(image["width"]) / 2, float(image["height"]) / 2
            if math.hypot(float(row["x"]) - cx, float(row["y"]) - cy) > 2.0:
                continue  # another object inside the crop, not the one it is centred on
            mpp = float(image["mpp"]) if image.get("mpp") else None
            crops.append(LabelledCrop(row["file"], image["source"], image.get("slide", ""), mpp, int(row["atypical"])))
    if not crops:
        raise TrainingError(f"{root} holds no rated mitotic figure at a crop centre in {', '.join(folders)}.")
    return sorted(crops, key=lambda c: c.file)


def split_crops(crops: Sequence[LabelledCrop], val_fraction: float = 0.2, seed: int = 0
                ) -> tuple[list[LabelledCrop], list[LabelledCrop]]:
    """Train and validation crops by the detector's split rule (:func:`~midog_viewer.train.splits.validation_by_slide`):
    whole slides within each source go to one side, and a source without slides (AtNorM-MD) stays in training."""
    val_index = validation_by_slide([(crop.source, crop.slide_group()) for crop in crops], val_fraction, seed, "crops")
    train = [crop for i, crop in enumerate(crops) if i not in val_index]
    val = [crop for i, crop in enumerate(crops) if i in val_index]
    if not train or not val:
        raise TrainingError(f"{len(crops)} crops cannot be split into training and validation; give more crops.")
    for name, part in (("training", train), ("validation", val)):
        if len({c.atypical for c in part}) < 2:
            raise TrainingError(f"the {name} split holds only one class; give more crops of both classes.")
    return train, val


def load_tensors(root: Path, crops: Sequence[LabelledCrop], input_px: int, mpp: float, margin: int) -> torch.Tensor:
    """All crops as one uint8 (N, 3, S, S) tensor at the model's spacing (kept in memory for training)."""
    out = torch.empty((len(crops), 3, input_px + 2 * margin, input_px + 2 * margin), dtype=torch.uint8)
    for i, crop in enumerate(crops):
        out[i] = (load_crop(root / crop.file, crop.mpp, input_px, mpp, margin) * 255.0).round().to(torch.uint8)
    return out
