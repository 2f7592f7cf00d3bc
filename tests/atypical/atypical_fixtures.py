"""Helpers of the atypical tests: crops drawn in the real_mitosis layout and a tiny network config."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

#: A network small enough to train in a second on a few crops.
TINY = dict(input_px=32, mpp=0.5, widths=(4, 8), blocks=(1, 1), dropout=0.0, tta=False)


def draw_crop(rng: np.random.Generator, atypical: int, size: int = 64) -> np.ndarray:
    """Pink background with one dark blob (normal) or three scattered blobs (atypical, 'multipolar')."""
    img = np.empty((size, size, 3), np.float64)
    img[:] = (235, 180, 215)
    img += rng.normal(0, 6, img.shape)
    yy, xx = np.mgrid[:size, :size]
    centres = [(size / 2, size / 2)] if not atypical else [
        (size / 2 + 9 * np.cos(a), size / 2 + 9 * np.sin(a)) for a in rng.uniform(0, 2 * np.pi) + np.arange(3) * 2.1]
    for cy, cx in centres:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (7 if not atypical else 4) ** 2
        img[mask] = (70, 40, 110)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_crop_folder(root: Path, per_slide: int = 6, slides: int = 6, unslided: int = 8, seed: int = 0) -> Path:
    """``root`` with amibr/ (slides s0..) and atnorm_md/ (no slide) crops, images.csv and objects.csv."""
    rng = np.random.default_rng(seed)
    images, objects = [], []
    for folder, source, n_slides, n in (("amibr", "AMi-Br/X", slides, per_slide), ("atnorm_md", "AtNorM", 1, unslided)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for s in range(n_slides):
            for i in range(n):
                name = f"{folder}/{s}_{i}.png"
                label = int(i % 2 == 0)
                Image.fromarray(draw_crop(rng, label)).save(root / name)
                slide = f"s{s}" if folder == "amibr" else ""
                images.append([name, source, slide, "0.5" if folder == "amibr" else "", 64, 64, "test"])
                objects.append([name, 32.0, 32.0, "mitotic figure", label])
                if i == 1:  # another object off-centre, which the crop does not rate
                    objects.append([name, 5.0, 5.0, "mitotic figure", 1 - label])
    with (root / "images.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "source", "slide", "mpp", "width", "height", "licence"], *images])
    with (root / "objects.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "x", "y", "label", "atypical"], *objects])
    return root


