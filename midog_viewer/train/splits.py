"""Training and validation by image or by slide, never by patch, so no cell is seen on both sides."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from midog_viewer.errors import TrainingError
from midog_viewer.train.sources import LabelledImage

#: Folder names in a split file that mark training and validation images.
_TRAIN_DIRS = {"train", "training"}
_VAL_DIRS = {"valid", "val", "validation"}


def read_split_file(path: str | Path) -> dict[str, str]:
    """File name → "train" or "val" from a ``train_val_split.txt``-style file.

    The organisers' file is an indented folder tree (``MIDOG/A/train/001.tiff``); a file belongs to the
    split named by the nearest enclosing ``train`` or ``valid`` folder. Lines ``NAME train`` / ``NAME val``
    work too.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read split file {path}: {exc}.") from exc
    split: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, folder name)
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if text.endswith("/"):
            stack.append((indent, text.rstrip("/").lower()))
            continue
        parts = re.split(r"[\s,;]+", text)
        if len(parts) == 2 and parts[1].lower() in _TRAIN_DIRS | _VAL_DIRS:
            split[Path(parts[0]).name] = "train" if parts[1].lower() in _TRAIN_DIRS else "val"
            continue
        folders = [name for _, name in stack] + [p.lower() for p in Path(text).parts[:-1]]
        for name in reversed(folders):
            if name in _TRAIN_DIRS or name in _VAL_DIRS:
                split[Path(text).name] = "train" if name in _TRAIN_DIRS else "val"
                break
    if not split:
        raise TrainingError(f"{path} names no image under a 'train' or 'valid' folder.")
    return split


def apply_split(
    images: Sequence[LabelledImage], split: dict[str, str]
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Training and validation images by a file-name split; images the split does not name are left out."""
    train = [im for im in images if split.get(Path(im.key).name) == "train"]
    val = [im for im in images if split.get(Path(im.key).name) == "val"]
    _check_split(train, val, "the split file")
    return train, val


def split_by_image(
    images: Sequence[LabelledImage], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """A reproducible random split by image (at least one image on each side)."""
    if not 0.0 < val_fraction < 1.0:
        raise TrainingError(f"the validation fraction must be between 0 and 1, got {val_fraction}.")
    if len(images) < 2:
        raise TrainingError(
            f"{len(images)} labelled image(s): at least 2 are needed to split training from validation by image."
        )
    order = sorted(range(len(images)), key=lambda i: images[i].key)
    random.Random(seed).shuffle(order)
    n_val = min(len(images) - 1, max(1, round(len(images) * val_fraction)))
    val = [images[i] for i in sorted(order[:n_val])]
    train = [images[i] for i in sorted(order[n_val:])]
    _check_split(train, val, "the random split")
    return train, val


def slide_group(image: LabelledImage) -> str:
    """The split group of an image: its slide's name without extension ("" for every image of unknown slide)."""
    return Path(image.slide).stem.lower() if image.slide else ""


def split_by_slide(
    images: Sequence[LabelledImage], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """A reproducible random split by slide, within each source: no slide has images on both sides (see
    :func:`validation_by_slide`)."""
    val_index = validation_by_slide([(image.source, slide_group(image)) for image in images], val_fraction, seed)
    val = [im for i, im in enumerate(images) if i in val_index]
    train = [im for i, im in enumerate(images) if i not in val_index]
    _check_split(train, val, "the split by slide")
    return train, val


def validation_by_slide(
    keys: Sequence[tuple[str, str]], val_fraction: float = 0.2, seed: int = 0, noun: str = "images"
) -> set[int]:
    """Which items go to validation, given each item's (source, slide group); the detector's and the atypical
    classifier's one split rule.

    Items of unknown slide (group "") form one group per source (they may share slides). In each source, slide
    groups are drawn into validation in a seeded random order until it holds ``val_fraction`` of that
    source's items; a group that alone would overshoot that share twice over stays in training (so a source
    whose items all lack a slide is kept wholly in training). So every source with several slides is
    validated on, and none leaks.
    """
    if not 0.0 < val_fraction < 1.0:
        raise TrainingError(f"the validation fraction must be between 0 and 1, got {val_fraction}.")
    by_source: dict[str, dict[str, list[int]]] = {}
    for i, (source, group) in enumerate(keys):
        by_source.setdefault(source, {}).setdefault(group, []).append(i)
    if sum(len(groups) for groups in by_source.values()) < 2:
        raise TrainingError(
            f"all {len(keys)} {noun} belong to one slide group: give a slide column so they can be split by slide."
        )
    rng = random.Random(seed)
    side: dict[str, bool] = {}  # slide group -> in validation; a slide met in two sources stays on one side
    val_index: set[int] = set()
    for source in sorted(by_source):
        groups = by_source[source]
        order = sorted(groups)
        rng.shuffle(order)
        target = val_fraction * sum(len(members) for members in groups.values())
        taken = sum(len(groups[name]) for name in order if name and side.get(name))
        for name in order:
            key = name or f"\0{source}"  # unknown slides: one group per source
            if key not in side:
                side[key] = len(groups) >= 2 and taken < target and len(groups[name]) <= 2 * target
                taken += len(groups[name]) if side[key] else 0
            if side[key]:
                val_index.update(groups[name])
    return val_index


def _check_split(train: Sequence[LabelledImage], val: Sequence[LabelledImage], what: str) -> None:
    if not train or not val:
        raise TrainingError(
            f"{what} leaves {len(train)} training and {len(val)} validation image(s): both need at least one."
        )
    if not any(im.n_mitoses for im in val):
        raise TrainingError(f"{what} leaves no mitotic figure in the validation images, so F1 is undefined.")


def check_labels(images: Iterable[LabelledImage]) -> None:
    """Refuse data with no mitotic figure at all: there would be nothing to learn."""
    images = list(images)
    if not images or not any(im.n_mitoses for im in images):
        raise TrainingError("the training data has no labelled mitotic figure.")
