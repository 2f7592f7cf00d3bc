"""Read an annotation file in any import format into boxes per image (no store involved).

The format comes from the name given or from the file's suffix (and, for JSON, from whether it is GeoJSON).
Putting the result into the review store, all or nothing, is :mod:`midog_viewer.review.importing`'s job.
"""

from __future__ import annotations

from pathlib import Path

from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import IMPORT_FORMATS, csv_table, geojson, midog_coco, sliderunner
from midog_viewer.formats.records import ImageAnnotations

__all__ = ["IMPORT_FORMATS", "detect_format", "read_file"]


def detect_format(path: str | Path) -> str:
    """Guess the format from the suffix (and, for JSON, from whether it is GeoJSON)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationFormatError(f"{path} does not exist or is not a file.")
    suffix = path.suffix.lower()
    if suffix in (".sqlite", ".db", ".sqlite3"):
        return "sliderunner"
    if suffix == ".csv":
        return "csv"
    if suffix == ".geojson":
        return "geojson"
    if suffix == ".json":
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                head = handle.read(4096).lstrip()
        except OSError as exc:
            raise AnnotationFormatError(f"cannot read {path}: {exc}.") from exc
        if head.startswith("[") or '"FeatureCollection"' in head or '"Feature"' in head:
            return "geojson"
        return "midog"
    raise AnnotationFormatError(
        f"cannot tell the format of {path.name} from its suffix; name one of {', '.join(IMPORT_FORMATS)}."
    )


def read_file(
    path: str | Path,
    fmt: str | None = None,
    *,
    point_box_px: float = 50.0,
    point_box_um: float | None = None,
    image_name: str | None = None,
) -> list[ImageAnnotations]:
    """Parse an annotation file in any import format into boxes per image."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationFormatError(f"{path} does not exist or is not a file.")
    fmt = fmt or detect_format(path)
    if fmt == "midog":
        return midog_coco.read(path, "xyxy")
    if fmt == "coco":
        return midog_coco.read(path, "xywh")
    if fmt == "sliderunner":
        return sliderunner.read(path, point_box_px, point_box_um)
    if fmt == "geojson":
        return geojson.read(path, image_name or path.stem, point_box_px)
    if fmt == "csv":
        return csv_table.read(path, point_box_px)
    raise AnnotationFormatError(f"unknown annotation format {fmt!r}; use one of {', '.join(IMPORT_FORMATS)}.")
