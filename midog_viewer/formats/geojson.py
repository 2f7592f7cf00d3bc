"""QuPath GeoJSON: one image's objects as Features with a classification.

Read: a FeatureCollection, a bare list of Features (QuPath's "Export objects"), or one Feature.
Point and MultiPoint geometries become squares of ``point_box_px`` pixels around each point; Polygon,
MultiPolygon and LineString become their bounding box. The class is ``properties.classification.name``
(or a plain string there); unclassified objects are labelled "unclassified". Coordinates are level-0
pixels, as QuPath writes them.

Written files are a FeatureCollection of rectangular Polygons with ``objectType`` "annotation", the
class as ``classification`` (with a colour) and our status, score and id under ``properties``, which
QuPath keeps as they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.classes import HARD_NEGATIVE, MITOTIC_FIGURE, canonical_class
from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import atomic
from midog_viewer.formats.gc_points import load_json
from midog_viewer.formats.records import ImageAnnotations, parse_subtype, point_box

POINT_BOX_PX = 50.0
UNCLASSIFIED = "unclassified"
_COLOURS = {MITOTIC_FIGURE: [255, 64, 64], HARD_NEGATIVE: [64, 160, 255]}


def _coordinates(value: Any, depth: int, where: str) -> list[tuple[float, float]]:
    """Flatten nested coordinate lists ``depth`` levels above [x, y] into points."""
    if depth == 0:
        if (
            not isinstance(value, list)
            or len(value) < 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value[:2])
        ):
            raise AnnotationFormatError(f"{where} must hold [x, y] positions of finite numbers, not {value!r}.")
        return [(float(value[0]), float(value[1]))]
    if not isinstance(value, list) or not value:
        raise AnnotationFormatError(f"{where} must be a non-empty list of coordinates.")
    return [point for item in value for point in _coordinates(item, depth - 1, where)]


_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "Polygon": 2, "MultiLineString": 2, "MultiPolygon": 3}


def _class_name(properties: Any, where: str) -> str:
    if properties is None:
        return UNCLASSIFIED
    if not isinstance(properties, dict):
        raise AnnotationFormatError(f"{where}.properties must be an object.")
    classification = properties.get("classification")
    if classification is None:
        return UNCLASSIFIED
    if isinstance(classification, str):
        name = classification
    elif isinstance(classification, dict) and isinstance(classification.get("name"), str):
        name = classification["name"]
    else:
        raise AnnotationFormatError(f"{where}.properties.classification must be a name or {{\"name\": …}}.")
    return canonical_class(name) or UNCLASSIFIED


def read(path: str | Path, image_name: str, point_box_px: float = POINT_BOX_PX) -> list[ImageAnnotations]:
    """Parse a QuPath GeoJSON file as the objects of the image ``image_name``."""
    path = Path(path)
    data = load_json(path)
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    else:
        features = data
    if not isinstance(features, list):
        raise AnnotationFormatError(f"{path.name} must be a GeoJSON FeatureCollection or a list of Features.")
    image = ImageAnnotations(image_name)
    boxes = []
    for i, feature in enumerate(features):
        where = f"{path.name} features[{i}]"
        if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
            raise AnnotationFormatError(f"{where} must be a Feature with a geometry.")
        geometry = feature["geometry"]
        kind = geometry.get("type")
        if not isinstance(kind, str) or kind not in _DEPTH:
            raise AnnotationFormatError(f"{where}.geometry.type {kind!r} is not a Point, MultiPoint or Polygon.")
        points = _coordinates(geometry.get("coordinates"), _DEPTH[kind], f"{where}.geometry.coordinates")
        label = _class_name(feature.get("properties"), where)
        atypical = parse_subtype((feature.get("properties") or {}).get("atypical"), where)
        if kind in ("Point", "MultiPoint"):
            for x, y in points:
                boxes.append(point_box(x, y, point_box_px))
                image.labels.append(label)
                image.atypical.append(atypical)
        else:
            xs, ys = zip(*points)
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
            image.labels.append(label)
            image.atypical.append(atypical)
    image.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return [image]


def feature_collection(
    boxes: np.ndarray, labels: list[str], properties: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A FeatureCollection of rectangles, one per box, classified by label."""
    features = []
    for i, (box, label) in enumerate(zip(np.asarray(boxes, dtype=float).tolist(), labels)):
        x1, y1, x2, y2 = box
        extra = properties[i] if properties is not None else {}
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": label, "color": _COLOURS.get(label, [200, 200, 200])},
                    "isLocked": False,
                    **extra,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write(path: str | Path, boxes: np.ndarray, labels: list[str], properties: list[dict[str, Any]] | None = None) -> None:
    """Write one image's boxes as a QuPath GeoJSON FeatureCollection, atomically."""
    atomic.write_text(path, json.dumps(feature_collection(boxes, labels, properties)))
