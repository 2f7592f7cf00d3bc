"""What a run trains on: the sources named on the command line, gathered, checked and split by image.

A :class:`DataSpec` is plain data (saved in the run folder, so ``--resume`` needs no data arguments);
:func:`gather` turns it into training and validation images and refuses bad input with one
:class:`~midog_viewer.errors.TrainingError` before any training work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midog_viewer.errors import TrainingError
from midog_viewer.train.sources import (
    LabelledImage,
    check_readable,
    images_from_coco,
    images_from_review_store,
    synthetic_images,
)
from midog_viewer.train.splits import apply_split, check_labels, read_split_file, split_by_image, split_by_slide
from midog_viewer.train.points import images_from_points


NO_DATA = "no training data: give --db, --coco or --points with --images, or --synthetic."


@dataclass
class DataSpec:
    """The training data of a run, as the user named it."""

    dbs: list[str] = field(default_factory=list)
    coco: str | None = None
    images: str | None = None
    split: str | None = None
    bbox_format: str = "xyxy"
    #: A CSV of object centres with the images in ``images`` (crop data sets), and its optional image table.
    points: str | None = None
    image_table: str | None = None
    synthetic: int = 0
    synthetic_seed: int = 0
    synthetic_size: int = 512
    val_fraction: float = 0.2
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def describe(self) -> dict[str, Any]:
        """What the data is, in words, for a checkpoint's provenance (the dock names the tissue a model learnt)."""
        parts = []
        if self.points:
            parts.append(f"crops listed in {Path(self.points).name}")
        if self.coco:
            parts.append(f"images of {Path(self.coco).name}")
        parts += [f"reviewed slides of {Path(db).name}" for db in self.dbs]
        if self.synthetic > 0:
            parts.append(f"{self.synthetic} synthetic fields")
        synthetic_only = self.synthetic > 0 and not (self.points or self.coco or self.dbs)
        return {"summary": ", ".join(parts) or "no data", "synthetic_only": synthetic_only}

    @property
    def empty(self) -> bool:
        return not self.dbs and self.coco is None and self.points is None and self.synthetic <= 0


@dataclass
class Split:
    """Training and validation images (split by image), and how many labelled images the split left out."""

    train: list[LabelledImage]
    val: list[LabelledImage]
    left_out: int = 0

    def summary(self) -> dict[str, Any]:
        def count(images: list[LabelledImage], label: int) -> int:
            return int(sum((im.labels == label).sum() for im in images))

        return {
            "train_images": len(self.train),
            "val_images": len(self.val),
            "left_out_images": self.left_out,
            "train_mitoses": count(self.train, 0),
            "train_hard_negatives": count(self.train, 1),
            "val_mitoses": count(self.val, 0),
            "val_hard_negatives": count(self.val, 1),
        }


def gather(spec: DataSpec) -> Split:
    """Load every source, check labels and files, and split by image (the split file, or at random)."""
    if spec.empty:
        raise TrainingError(NO_DATA)
    if spec.coco is not None and spec.points is not None:
        raise TrainingError("give --coco or --points, not both: each names the images of --images.")
    for option, given in (("--coco", spec.coco), ("--points", spec.points)):
        if given is not None and spec.images is None:
            raise TrainingError(f"{option} needs --images, the folder that holds the images it names.")
    if spec.image_table is not None and spec.points is None:
        raise TrainingError("--image-table describes the images of a --points file; none was given.")
    if spec.split is not None and spec.coco is None:
        raise TrainingError("--split applies to the images of a --coco file; none was given.")

    split_file = read_split_file(spec.split) if spec.split is not None else None
    named: list[LabelledImage] = []  # split by the split file
    random_split: list[LabelledImage] = []  # split at random by image
    by_slide: list[LabelledImage] = []  # split at random by slide (crop data sets)
    if spec.coco is not None:
        coco_images = images_from_coco(spec.coco, spec.images, spec.bbox_format)
        (named if split_file is not None else random_split).extend(coco_images)
    if spec.points is not None:
        by_slide.extend(images_from_points(spec.points, spec.images, spec.image_table))
    for db in spec.dbs:
        random_split.extend(images_from_review_store(db))
    if spec.synthetic > 0:
        random_split.extend(synthetic_images(spec.synthetic, spec.synthetic_seed, spec.synthetic_size))
    check_labels(named + random_split + by_slide)

    train: list[LabelledImage] = []
    val: list[LabelledImage] = []
    left_out = 0
    if named:
        train, val = apply_split(named, split_file)
        left_out = len(named) - len(train) - len(val)
    if random_split:
        more_train, more_val = split_by_image(random_split, spec.val_fraction, spec.seed)
        train += more_train
        val += more_val
    if by_slide:
        more_train, more_val = split_by_slide(by_slide, spec.val_fraction, spec.seed)
        train += more_train
        val += more_val
    check_labels(train)
    check_readable(train + val)
    return Split(train, val, left_out)


def resolve_paths(spec: DataSpec) -> DataSpec:
    """The same spec with absolute paths, so a run folder stays valid from any working directory."""

    def absolute(path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().resolve())

    return dataclasses.replace(
        spec,
        dbs=[absolute(db) for db in spec.dbs],
        coco=absolute(spec.coco),
        images=absolute(spec.images),
        split=absolute(spec.split),
        points=absolute(spec.points),
        image_table=absolute(spec.image_table),
    )
