"""Export the review store to the field's formats (through the codecs of :mod:`midog_viewer.formats`).

Which objects go out (``selection``):

* ``reviewed`` (default except for CSV): ground truth, annotations added by hand, accepted detections
  and detections relabelled to another class, each under its current label — the labels a review made;
* ``detections``: every detection with its score, whatever its status (a model's output, e.g. for
  ``midog-viewer evaluate``);
* ``all`` (default for CSV): everything not deleted, with its status.

Formats: ``csv`` (one row per object), ``coco`` (MIDOG COCO-style JSON, bbox xyxy unless
``bbox_format="xywh"``), ``sliderunner`` (a SlideRunner database), ``geojson`` (QuPath; one file per
slide, in a folder unless a single slide goes to a ``.geojson``/``.json`` path) and ``midog-json``
(case name → grand-challenge "Multiple points" in mm, what the MIDOG evaluation reads; needs each
slide's pixel size).

Every file is written atomically (:mod:`~midog_viewer.formats.atomic`) and never over the review database
itself. In a GeoJSON folder each slide's file is named by its stem; slides whose stems collide (``a.tiff``
and ``a.png``) are named by their whole file name (``a.tiff.geojson``), and same-named slides of
different folders also by their id, so no slide's file overwrites another's. The formats that name
slides inside one file (CSV, COCO, SlideRunner, midog-json) follow the same rule from the file name on:
two slides named ``001.png`` (of different folders) go out as ``001.png.3`` and ``001.png.7`` (their
ids), so no slide's objects merge into another's or vanish, and the export imports back slide by slide.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midog_viewer.classes import GC_POINT_NAMES, HARD_NEGATIVE, MITOTIC_FIGURE
from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import EXPORT_FORMATS, atomic, csv_table, gc_points, geojson, midog_coco, sliderunner
from midog_viewer.formats.records import ImageAnnotations
from midog_viewer.review.status import DETECTION, REVIEWED_STATUSES
from midog_viewer.review.store import ObjectTable, ReviewStore, Slide

SELECTIONS = ("reviewed", "detections", "all")


@dataclass
class ExportSummary:
    """What was written: the path, how many slides and objects."""

    path: Path
    slides: int
    objects: int


def select(table: ObjectTable, selection: str) -> ObjectTable:
    """Keep the rows a selection (see the module docstring) names."""
    if selection == "reviewed":
        return table.select(np.isin(table.status, REVIEWED_STATUSES))
    if selection == "detections":
        return table.select(table.kind == DETECTION)
    if selection == "all":
        return table
    raise AnnotationFormatError(f"unknown selection {selection!r}; use one of {', '.join(SELECTIONS)}.")


def _slides(store: ReviewStore, slide_names: list[str] | None) -> list[Slide]:
    if not slide_names:
        return store.slides()
    slides = []
    for name in slide_names:
        slide = store.find_slide(name)
        if slide is None:
            raise AnnotationFormatError(f"{store.path.name} has no slide named {name!r}.")
        slides.append(slide)
    return slides


def export_store(
    store: ReviewStore,
    fmt: str,
    out: str | Path,
    *,
    selection: str | None = None,
    slide_names: list[str] | None = None,
    bbox_format: str = "xyxy",
    slide_ids: list[int] | None = None,
) -> ExportSummary:
    """Write the store's objects (per ``selection``) in ``fmt`` to ``out``; ``slide_ids`` (else names) picks slides."""
    if fmt not in EXPORT_FORMATS:
        raise AnnotationFormatError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}.")
    selection = selection or ("all" if fmt == "csv" else "reviewed")
    out = Path(out)
    slides = [store.slide(i) for i in slide_ids] if slide_ids else _slides(store, slide_names)
    tables = [(slide, select(store.objects(slide.id), selection)) for slide in slides]
    total = sum(len(table) for _, table in tables)
    protect = atomic.store_files(store.path)
    if fmt != "geojson":
        atomic.check_target(out, protect)
        named = list(zip(image_names(slides), tables))
    if fmt == "csv":
        csv_table.write(out, [row for name, (_, table) in named for row in _csv_rows(name, table)])
    elif fmt == "coco":
        midog_coco.write(out, [_image(name, slide, table) for name, (slide, table) in named], bbox_format)
    elif fmt == "sliderunner":
        sliderunner.write(out, [_image(name, slide, table) for name, (slide, table) in named], person=store.reviewer)
    elif fmt == "geojson":
        _write_geojson(out, tables, protect)
    else:
        gc_points.write_cases(out, {name: _mm_points(slide, table) for name, (slide, table) in named})
    return ExportSummary(out, len(slides), total)


def _subtypes(table: ObjectTable) -> list[int | None]:
    """Each row's subtype as exports write it: 1 atypical, 0 normal, None (not a mitotic figure, or unknown)."""
    return [int(a) if a >= 0 and label == MITOTIC_FIGURE else None for a, label in zip(table.atypical, table.label)]


def _image(name: str, slide: Slide, table: ObjectTable) -> ImageAnnotations:
    return ImageAnnotations(name, slide.width, slide.height, slide.mpp, table.boxes, list(table.label),
                            _subtypes(table))


def _csv_rows(name: str, table: ObjectTable) -> list[dict]:
    centres = table.centres
    subtypes = _subtypes(table)
    return [
        {
            "slide": name, "kind": table.kind[i], "id": int(table.id[i]),
            "x1": table.x1[i], "y1": table.y1[i], "x2": table.x2[i], "y2": table.y2[i],
            "cx": centres[i, 0], "cy": centres[i, 1], "label": table.label[i],
            "score": "" if math.isnan(table.score[i]) else table.score[i],
            "status": table.status[i], "source": table.source[i], "run_id": "" if table.run_id[i] < 0 else int(table.run_id[i]),
            "p_atypical": "" if math.isnan(table.p_atypical[i]) else table.p_atypical[i],
            "atypical": "" if subtypes[i] is None else subtypes[i],
        }
        for i in range(len(table))
    ]


def _mm_points(slide: Slide, table: ObjectTable) -> list[gc_points.PointPrediction]:
    if not slide.mpp:
        raise AnnotationFormatError(
            f"slide {slide.name} has no pixel size, so its points cannot be written in mm; record its mpp first."
        )
    to_mm = slide.mpp / 1000.0
    centres = table.centres * to_mm
    return [
        gc_points.PointPrediction(
            float(centres[i, 0]), float(centres[i, 1]), 0.0, GC_POINT_NAMES[MITOTIC_FIGURE if table.label[i] == MITOTIC_FIGURE else HARD_NEGATIVE],
            1.0 if math.isnan(table.score[i]) else float(table.score[i]),
        )
        for i in range(len(table))
    ]


def _distinct(
    slides: list[Slide], names: list[str], fallbacks: list[Callable[[Slide], str]], fold: Callable[[str], str], what: str
) -> list[str]:
    """Names that collide (after ``fold``) give way to the next fallback: the file name, then name and slide id."""
    for fallback in fallbacks:
        seen = Counter(fold(name) for name in names)
        names = [fallback(s) if seen[fold(name)] > 1 else name for s, name in zip(slides, names)]
    if len({fold(name) for name in names}) != len(names):
        raise AnnotationFormatError(f"these slides' names give no distinct {what}; export them one by one.")
    return names


def _with_id(slide: Slide) -> str:
    return f"{slide.name}.{slide.id}"


def image_names(slides: list[Slide]) -> list[str]:
    """One distinct image name per slide inside one export file: the file name, else the name and the slide id."""
    return _distinct(slides, [slide.name for slide in slides], [_with_id], str, "image names")


def geojson_file_names(slides: list[Slide]) -> list[str]:
    """One distinct ``.geojson`` name per slide: the stem, else the file name, else the name and the slide id."""
    names = _distinct(slides, [Path(slide.name).stem for slide in slides], [lambda s: s.name, _with_id],
                      str.lower, "GeoJSON file names")  # distinct on case-blind file systems too
    return [f"{name}.geojson" for name in names]


def _write_geojson(out: Path, tables: list[tuple[Slide, ObjectTable]], protect: tuple[Path, ...]) -> None:
    single_file = out.suffix.lower() in (".geojson", ".json")
    if single_file and len(tables) != 1:
        raise AnnotationFormatError(
            f"GeoJSON holds one image; {len(tables)} slides need a folder as --out (or name one slide)."
        )
    if single_file:
        targets = [atomic.check_target(out, protect)]
    else:
        folder = atomic.make_folder(out, protect)
        targets = [atomic.check_target(folder / name, protect) for name in geojson_file_names([s for s, _ in tables])]
    for (slide, table), target in zip(tables, targets):
        subtypes = _subtypes(table)
        properties = [
            {"name": table.status[i], "status": table.status[i], "midog_kind": table.kind[i], "midog_id": int(table.id[i]),
             **({} if math.isnan(table.score[i]) else {"score": float(table.score[i])}),
             **({} if subtypes[i] is None else {"atypical": bool(subtypes[i])})}
            for i in range(len(table))
        ]
        geojson.write(target, table.boxes, list(table.label), properties)
