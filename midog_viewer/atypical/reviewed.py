"""Training crops for the atypical classifier from review stores: the subtypes a human gave, cut from the slides.

What is a label: a mitotic figure that counts (an accepted detection, a detection relabelled to "mitotic
figure", ground truth, one added by hand) whose subtype a human said: a reviewer's subtype decision (T in
the dock; pressing it twice confirms the model's call) or an imported annotation's ``atypical`` flag. A
detection's default subtype is the classifier's own call (``p_atypical >= threshold``); training on it would
teach the model its own guesses and make its errors look confirmed, so a detection whose subtype nobody
decided is left out, accepted or not. (A file imported as annotations is taken at its word: an export of a
review carries the model's calls for figures nobody marked, so re-importing one launders them; import
model output as detections instead.)

Each figure is cut around its centre by :func:`~midog_viewer.atypical.data.field_of_view` (the rule a
detection's crop follows) with the training margin, at the slide's own spacing, and written as a
``real_mitosis``-style folder (``images.csv`` + ``objects.csv`` + PNG crops, source "reviewed", slide = the
slide's name) inside the run folder: :func:`~midog_viewer.atypical.train.train_atypical` reads it as it reads
the shipped data, splits it by slide with the same rule, and ``--resume`` finds it there.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.atypical.data import CONTEXT_MARGIN, REVIEWED_FOLDER, field_of_view
from midog_viewer.atypical.model import AtypicalConfig, load_classifier
from midog_viewer.atypical.train import METRICS_FILE, RUN_FILE, STATE_FILE, AtypicalResult, train_atypical
from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.errors import MidogError, TrainingError
from midog_viewer.formats import atomic
from midog_viewer.review.records import SUBTYPE_UNKNOWN, ObjectTable
from midog_viewer.review.status import ANNOTATION, REVIEWED_STATUSES
from midog_viewer.train.progress import PROGRESS_FILE
from midog_viewer.train.sources import slide_file

#: The folder of a run that holds the reviewed crops (a ``real_mitosis``-style folder).
CROPS_DIR = "reviewed-crops"
#: The ``source`` of reviewed crops in ``images.csv`` and in the validation figures per source.
REVIEWED_SOURCE = "reviewed"
#: What to tell a user whose store has no subtype a human gave.
HOW_TO_LABEL = ("press T on mitoses in the review dock to mark them atypical or normal (twice confirms the "
                "model's call), or import annotations that carry an atypical flag")


@dataclass(frozen=True)
class ReviewedFigure:
    """One mitotic figure with a human's subtype: where it is (store, slide file, level-0 centre) and what it is."""

    store: Path
    slide: str  # the slide's name: the unit the split keeps on one side
    path: Path  # the slide file
    mpp: float | None  # µm/px the store recorded for the slide (the file's own wins when it has one)
    x: float
    y: float
    atypical: int
    kind: str
    object_id: int


def human_subtypes(table: ObjectTable) -> np.ndarray:
    """Rows that are mitotic figures that count and whose subtype a human gave (see the module docstring)."""
    counts = np.isin(table.status, REVIEWED_STATUSES) & (table.label == MITOTIC_FIGURE)
    said = table.subtype_decided | (table.kind == ANNOTATION)  # an annotation's flag is its file's, never a model's
    return counts & said & (table.atypical != SUBTYPE_UNKNOWN)


def reviewed_figures(stores: Sequence[str | Path]) -> list[ReviewedFigure]:
    """The figures with a human's subtype in every store, checked: each store has some, each slide file is there."""
    from midog_viewer.review import ReviewStore

    figures: list[ReviewedFigure] = []
    for db in dict.fromkeys(Path(s).resolve() for s in stores):  # a store named twice counts once
        if not db.is_file():
            raise TrainingError(f"review database not found: {db}.")
        found: list[ReviewedFigure] = []
        try:
            with ReviewStore(db) as store:  # as the detector's training opens it: an older store is brought up to date
                for slide in store.slides():
                    table = store.objects(slide.id)
                    rows = np.flatnonzero(human_subtypes(table))
                    path = slide_file(db, slide.path)
                    found += [ReviewedFigure(db, slide.name, path, slide.mpp, float(table.centres[i, 0]),
                                             float(table.centres[i, 1]), int(table.atypical[i]), str(table.kind[i]),
                                             int(table.id[i])) for i in rows]
        except MidogError as exc:
            raise TrainingError(f"cannot use review database {db}: {exc}") from exc
        if not found:
            raise TrainingError(f"no reviewed subtypes in {db}: {HOW_TO_LABEL}.")
        figures += found
    missing = sorted({f.path for f in figures if not f.path.is_file()})
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TrainingError(f"slide not found: {missing[0]}{more}; open it once from where it is now, so its store "
                            "knows the place, or leave that store out.")
    return figures


def check_enough(figures: Sequence[ReviewedFigure], with_base: bool) -> None:
    """Refuse reviewed figures that alone cannot be split by slide with both classes (``with_base``: the base
    crops validate too, so anything goes)."""
    if with_base:
        return
    slides = {Path(f.slide).stem.lower() for f in figures}
    if len(slides) < 2:
        raise TrainingError(f"the {len(figures)} reviewed subtypes come from one slide; a validation split by slide "
                            "needs two or more: review another slide, or add --data with the base crops.")
    for value, name in ((1, "atypical"), (0, "normal")):
        if not any(f.atypical == value for f in figures):
            raise TrainingError(f"none of the {len(figures)} reviewed subtypes is {name}; the classifier needs "
                                f"both: {HOW_TO_LABEL}, or add --data with the base crops.")


def write_crop_folder(figures: Sequence[ReviewedFigure], root: str | Path, config: AtypicalConfig) -> Path:
    """Cut each figure's crop (the model's input and the training margin, at the slide's spacing) into ``root``
    as a ``real_mitosis``-style folder; return ``root``. One slide is open at a time."""
    from PIL import Image

    from midog_viewer.io import open_slide

    root = Path(root)
    (root / REVIEWED_FOLDER).mkdir(parents=True, exist_ok=False)
    stores = {db: i for i, db in enumerate(dict.fromkeys(f.store for f in figures))}
    images: list[list[Any]] = []
    objects: list[list[Any]] = []
    by_slide: dict[Path, list[ReviewedFigure]] = {}
    for figure in figures:
        by_slide.setdefault(figure.path, []).append(figure)
    for path, part in by_slide.items():
        try:
            with open_slide(path) as slide:
                for f in part:
                    rgb, mpp = field_of_view(slide, f.x, f.y, config.input_px, config.mpp, CONTEXT_MARGIN,
                                             mpp=slide.mpp or f.mpp)
                    name = f"{REVIEWED_FOLDER}/{stores[f.store]}-{Path(f.slide).stem}-{f.kind}-{f.object_id}.png"
                    Image.fromarray(np.ascontiguousarray(rgb[..., :3])).save(root / name)
                    height, width = rgb.shape[:2]
                    images.append([name, REVIEWED_SOURCE, f.slide, mpp, width, height, "", str(f.store), f.kind,
                                   f.object_id, f.x, f.y])
                    objects.append([name, width / 2, height / 2, MITOTIC_FIGURE, f.atypical])
        except MidogError as exc:
            raise TrainingError(f"cannot read slide {path}: {exc}") from exc
    with atomic.open_text(root / "images.csv", newline="") as fh:
        csv.writer(fh).writerows([["file", "source", "slide", "mpp", "width", "height", "licence", "store", "kind",
                                   "object_id", "x", "y"], *images])
    with atomic.open_text(root / "objects.csv", newline="") as fh:
        csv.writer(fh).writerows([["file", "x", "y", "label", "atypical"], *objects])
    return root


def train_on_stores(stores: Sequence[str | Path], out_dir: str | Path, *, data: str | Path | None = None,
                    init: str | Path | None = None, **kwargs: Any) -> AtypicalResult:
    """Train (fine-tune from ``init``, else from scratch) on the reviewed subtypes of ``stores``, with the base
    crops folder ``data`` if given; the crops go to ``out_dir/reviewed-crops``. ``kwargs`` go to
    :func:`train_atypical`. Every check runs first; if the run fails before its first saved state, nothing of
    it is left behind (the run folder is removed when this call made it)."""
    out = Path(out_dir)
    if (out / STATE_FILE).exists():
        raise TrainingError(f"{out} already holds a run; resume it with --resume {out} or choose another --out.")
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file, not a run folder.")
    if (out / CROPS_DIR).exists():
        raise TrainingError(f"{out / CROPS_DIR} already exists; choose another --out.")
    if data is not None and not Path(data).is_dir():
        raise TrainingError(f"--data {data} is not a folder.")
    figures = reviewed_figures(stores)
    check_enough(figures, with_base=data is not None)
    config = load_classifier(init)[0].config if init is not None else kwargs.get("config") or AtypicalConfig()
    created = not out.exists()
    record = {"stores": [str(Path(s).resolve()) for s in stores], "reviewed_figures": len(figures),
              "reviewed_atypical": sum(f.atypical for f in figures)}
    try:
        write_crop_folder(figures, out / CROPS_DIR, config)
        roots = [out / CROPS_DIR, *([Path(data)] if data is not None else [])]
        return train_atypical(roots, out, init=init, record=record, **kwargs)
    except BaseException:
        if not (out / STATE_FILE).exists():
            _remove_run(out, created)
        raise


def _remove_run(out: Path, created: bool) -> None:
    """Take away what a failed run wrote: the whole folder if it made it, else its crops and run files."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    shutil.rmtree(out / CROPS_DIR, ignore_errors=True)
    for name in (RUN_FILE, PROGRESS_FILE, METRICS_FILE):
        (out / name).unlink(missing_ok=True)
