"""Grand-challenge "Multiple points" JSON (coordinates in mm), as the MIDOG evaluation reads and writes it.

Three shapes are read:

* one "Multiple points" object: ``{"type": "Multiple points", "points": [{"name", "point": [x, y, z],
  "probability"}, …], "version": {…}}``;
* a JSON object mapping case name (e.g. "007.tiff") → a "Multiple points" object (what
  ``midog-viewer export --format midog-json`` writes);
* the organisers' prediction folder: ``predictions.json`` (a list of algorithm jobs naming each job's
  input image) plus ``<job pk>/output/mitotic-figures.json``.

The organisers' ground truth (``ground_truth.json``) maps case → ``{"annotations": [[x, y, z], …],
"tumor domain": d, "roi type": t}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midog_viewer.classes import GC_POINT_NAMES, MITOTIC_FIGURE
from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import atomic

MULTIPLE_POINTS = "Multiple points"
#: The organisers' defaults for points written in the MIDOG 2021 format (no name, no probability).
DEFAULT_NAME = GC_POINT_NAMES[MITOTIC_FIGURE]
DEFAULT_PROBABILITY = 0.5


@dataclass(frozen=True)
class PointPrediction:
    """One predicted point in mm with its class name and probability."""

    x: float
    y: float
    z: float
    name: str
    probability: float


@dataclass
class GroundTruthCase:
    """The organisers' ground truth of one case: points in mm, plus the tumour domain and ROI type if given."""

    points: list[tuple[float, float, float]]
    tumor_domain: Any = None
    roi_type: str | None = None
    extra: dict = field(default_factory=dict)


def load_json(path: str | Path) -> Any:
    """Parse a JSON file, turning any failure into one AnnotationFormatError naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationFormatError(f"cannot read {path}: {exc}.") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationFormatError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc
    except RecursionError as exc:
        raise AnnotationFormatError(f"{path} nests JSON too deeply to read.") from exc


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationFormatError(f"{where} must be a finite number, not {value!r}.")
    return float(value)


def parse_points(obj: Any, where: str) -> list[PointPrediction]:
    """The points of one "Multiple points" object (``where`` names it in error messages)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("points"), list):
        raise AnnotationFormatError(f"{where} must be a \"Multiple points\" object with a \"points\" list.")
    points = []
    for i, point in enumerate(obj["points"]):
        at = f"{where} points[{i}]"
        if not isinstance(point, dict):
            raise AnnotationFormatError(f"{at} must be an object with \"point\", \"name\" and \"probability\".")
        coords = point.get("point")
        if not isinstance(coords, list) or not 2 <= len(coords) <= 3:
            raise AnnotationFormatError(f"{at}.point must be a list [x, y, z] in mm.")
        xyz = [_number(c, f"{at}.point[{k}]") for k, c in enumerate(coords)] + [0.0] * (3 - len(coords))
        name = point.get("name", DEFAULT_NAME)
        if not isinstance(name, str):
            raise AnnotationFormatError(f"{at}.name must be a string.")
        probability = _number(point.get("probability", DEFAULT_PROBABILITY), f"{at}.probability")
        points.append(PointPrediction(xyz[0], xyz[1], xyz[2], name, probability))
    return points


def read_predictions(path: str | Path) -> dict[str, list[PointPrediction]]:
    """Predicted points per case from any of the three shapes in the module docstring."""
    path = Path(path)
    if path.is_dir():
        return _read_prediction_folder(path)
    data = load_json(path)
    if path.name == "predictions.json" and isinstance(data, list):
        return _read_prediction_folder(path.parent)
    if isinstance(data, dict) and "points" in data and data.get("type", MULTIPLE_POINTS) == MULTIPLE_POINTS:
        raise AnnotationFormatError(
            f"{path} is a single \"Multiple points\" object; map each case name to one (or pass the folder)."
        )
    if not isinstance(data, dict):
        raise AnnotationFormatError(f"{path} must map case names to \"Multiple points\" objects.")
    return {str(case): parse_points(obj, f"{path} case {case!r}") for case, obj in data.items()}


def _read_prediction_folder(folder: Path) -> dict[str, list[PointPrediction]]:
    """The organisers' layout: predictions.json lists jobs; each job's points lie under <pk>/output/."""
    listing = folder / "predictions.json"
    if not listing.is_file():
        raise AnnotationFormatError(f"{folder} has no predictions.json listing the algorithm jobs.")
    jobs = load_json(listing)
    if not isinstance(jobs, list):
        raise AnnotationFormatError(f"{listing} must be a list of algorithm jobs.")
    result: dict[str, list[PointPrediction]] = {}
    for i, job in enumerate(jobs):
        where = f"{listing} job {i}"
        try:
            pk = str(job["pk"])
            image = next(v["image"]["name"] for v in job["inputs"] if v.get("image"))
            output = next(v for v in job["outputs"] if v["interface"]["slug"] == "mitotic-figures")
            relative = output["interface"]["relative_path"]
        except (KeyError, TypeError, StopIteration) as exc:
            raise AnnotationFormatError(
                f"{where} lacks pk, an input image name or a \"mitotic-figures\" output ({exc!r})."
            ) from exc
        points_file = folder / pk / "output" / str(relative)
        if not points_file.is_file():
            raise AnnotationFormatError(f"{where}: {points_file} does not exist.")
        result[str(image)] = parse_points(load_json(points_file), str(points_file))
    return result


def read_ground_truth(path: str | Path) -> dict[str, GroundTruthCase]:
    """The organisers' ground_truth.json: case → points in mm (plus tumour domain and ROI type)."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise AnnotationFormatError(f"{path} must map case names to {{\"annotations\": [[x, y, z], …]}}.")
    cases = {}
    for case, entry in data.items():
        where = f"{path} case {case!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations"), list):
            raise AnnotationFormatError(f"{where} needs an \"annotations\" list of [x, y, z] points in mm.")
        points = []
        for k, point in enumerate(entry["annotations"]):
            if not isinstance(point, list) or not 2 <= len(point) <= 3:
                raise AnnotationFormatError(f"{where} annotations[{k}] must be [x, y, z] in mm.")
            xyz = [_number(c, f"{where} annotations[{k}][{j}]") for j, c in enumerate(point)]
            points.append(tuple(xyz + [0.0] * (3 - len(xyz))))
        extra = {k: v for k, v in entry.items() if k not in ("annotations", "tumor domain", "roi type")}
        cases[str(case)] = GroundTruthCase(points, entry.get("tumor domain"), entry.get("roi type"), extra)
    return cases


def multiple_points(points: list[PointPrediction]) -> dict:
    """A "Multiple points" object for one case (what the MIDOG evaluation reads)."""
    return {
        "name": "Points of interest",
        "type": MULTIPLE_POINTS,
        "points": [
            {"name": p.name, "point": [p.x, p.y, p.z], "probability": p.probability} for p in points
        ],
        "version": {"major": 1, "minor": 0},
    }


def write_cases(path: str | Path, cases: dict[str, list[PointPrediction]]) -> None:
    """Write case name → "Multiple points" object as one JSON file, atomically."""
    atomic.write_text(path, json.dumps({case: multiple_points(p) for case, p in cases.items()}, indent=1))
