"""MIDOG's COCO-style JSON (``MIDOG.json``, ``MIDOG++.json``): images, categories, annotations.

Beware: in the MIDOG files ``bbox`` is ``[x1, y1, x2, y2]``, not COCO's ``[x, y, w, h]``; standard
COCO boxes are read and written only with ``bbox_format="xywh"``. Category names go through
:func:`~midog_viewer.classes.canonical_class` ("not mitotic figure" → "hard negative"). Files whose
``info.description`` names MIDOG get the MIDOG 2021 pixel sizes for images 001–200; an image's own
``mpp`` field (which our exports add; other readers ignore it) wins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.classes import HARD_NEGATIVE, MIDOG_FILE_NAMES, MITOTIC_FIGURE, canonical_class
from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import atomic
from midog_viewer.formats.gc_points import load_json
from midog_viewer.formats.records import ImageAnnotations, finish, midog_2021_mpp, parse_subtype

BBOX_FORMATS = ("xyxy", "xywh")


def _require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise AnnotationFormatError(f"{where} has no \"{key}\" field.")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise AnnotationFormatError(f"{where}.{key} has the wrong type ({type(value).__name__}).")
    return value


def read(path: str | Path, bbox_format: str = "xyxy") -> list[ImageAnnotations]:
    """Parse a MIDOG COCO-style file into boxes per image (every listed image, labelled or not)."""
    if bbox_format not in BBOX_FORMATS:
        raise AnnotationFormatError(f"bbox format must be 'xyxy' (MIDOG) or 'xywh' (COCO), not {bbox_format!r}.")
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise AnnotationFormatError(f"{path} must be a JSON object with images, categories and annotations.")
    info = data.get("info")
    is_midog = isinstance(info, dict) and "midog" in str(info.get("description", "")).lower()
    images: dict[str, ImageAnnotations] = {}
    names_by_id: dict[int, str] = {}
    for i, entry in enumerate(_require(data, "images", list, str(path))):
        where = f"{path.name} images[{i}]"
        image_id = _require(entry, "id", int, where)
        name = _require(entry, "file_name", str, where)
        if not name.strip():
            raise AnnotationFormatError(f"{where}.file_name is empty.")
        width = entry.get("width")
        height = entry.get("height")
        for key, value in (("width", width), ("height", height)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise AnnotationFormatError(f"{where}.{key} must be a positive integer, not {value!r}.")
        if image_id in names_by_id:
            raise AnnotationFormatError(f"{where}.id {image_id} is used by two images.")
        if name in images:
            raise AnnotationFormatError(f"{where}.file_name {name!r} is listed twice.")
        mpp = entry.get("mpp")
        if mpp is not None and (isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not 0 < mpp < 1e3):
            raise AnnotationFormatError(f"{where}.mpp must be a positive number of µm per pixel, not {mpp!r}.")
        if mpp is None and is_midog:
            mpp = midog_2021_mpp(name)
        names_by_id[image_id] = name
        images[name] = ImageAnnotations(name, width, height, None if mpp is None else float(mpp))
    classes: dict[int, str] = {}
    for i, entry in enumerate(_require(data, "categories", list, str(path))):
        where = f"{path.name} categories[{i}]"
        category_id = _require(entry, "id", int, where)
        if category_id in classes:  # a second name for the same id would relabel the first one's annotations
            raise AnnotationFormatError(f"{where}.id {category_id} is used by two categories.")
        classes[category_id] = canonical_class(_require(entry, "name", str, where))
    boxes: dict[str, list[list[float]]] = {}
    for i, entry in enumerate(_require(data, "annotations", list, str(path))):
        where = f"{path.name} annotations[{i}]"
        image_id = _require(entry, "image_id", int, where)
        category = _require(entry, "category_id", int, where)
        bbox = _require(entry, "bbox", list, where)
        if image_id not in names_by_id:
            raise AnnotationFormatError(f"{where}.image_id {image_id} names no image.")
        if category not in classes:
            raise AnnotationFormatError(f"{where}.category_id {category} names no category.")
        if len(bbox) != 4 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in bbox
        ):
            raise AnnotationFormatError(f"{where}.bbox must be four finite numbers, not {bbox!r}.")
        a, b, c, d = (float(v) for v in bbox)
        box = [a, b, a + c, b + d] if bbox_format == "xywh" else [a, b, c, d]
        if box[2] < box[0] or box[3] < box[1]:
            hint = "" if bbox_format == "xywh" else " (is it COCO [x, y, w, h]? then use the xywh option)"
            raise AnnotationFormatError(f"{where}.bbox {bbox!r} is not [x1, y1, x2, y2]{hint}.")
        name = names_by_id[image_id]
        boxes.setdefault(name, []).append(box)
        images[name].labels.append(classes[category])
        images[name].atypical.append(parse_subtype(entry.get("atypical"), where))
    return finish(images, boxes)


def write(path: str | Path, images: list[ImageAnnotations], bbox_format: str = "xyxy", description: str = "") -> None:
    """Write boxes per image as MIDOG COCO-style JSON (xyxy unless ``bbox_format="xywh"``), atomically."""
    if bbox_format not in BBOX_FORMATS:
        raise AnnotationFormatError(f"bbox format must be 'xyxy' (MIDOG) or 'xywh' (COCO), not {bbox_format!r}.")
    labels = [MITOTIC_FIGURE, HARD_NEGATIVE] + sorted(
        {lab for image in images for lab in image.labels} - {MITOTIC_FIGURE, HARD_NEGATIVE}
    )
    category_ids = {label: i + 1 for i, label in enumerate(labels)}
    out_images, out_annotations = [], []
    for image_id, image in enumerate(images, start=1):
        record: dict[str, Any] = {"file_name": image.name, "id": image_id}
        if image.width:
            record["width"] = int(image.width)
        if image.height:
            record["height"] = int(image.height)
        if image.mpp:
            record["mpp"] = float(image.mpp)
        out_images.append(record)
        for box, label, atypical in zip(np.asarray(image.boxes, dtype=float).tolist(), image.labels, image.subtypes()):
            x1, y1, x2, y2 = (round(v, 3) for v in box)
            bbox = [x1, y1, x2 - x1, y2 - y1] if bbox_format == "xywh" else [x1, y1, x2, y2]
            out_annotations.append(
                {"bbox": bbox, "category_id": category_ids[label], "image_id": image_id, "id": len(out_annotations) + 1,
                 **({} if atypical is None else {"atypical": atypical})}
            )
    document = {
        "info": {"description": description or "midog-viewer export", "bbox_format": bbox_format},
        "images": out_images,
        "categories": [{"id": i, "name": MIDOG_FILE_NAMES.get(label, label)} for label, i in category_ids.items()],
        "annotations": out_annotations,
    }
    atomic.write_text(path, json.dumps(document))
