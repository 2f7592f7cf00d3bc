"""CSV annotations: one object a line, with a header naming the columns.

Read: an image column (``image``, ``slide``, ``file_name``, ``filename`` or ``image_name``), a class
column (``label``, ``class``, ``category`` or ``classification``), and either a box (``x1, y1, x2, y2``)
or a centre (``x, y``, with ``w, h`` for the box size, else a square of ``point_box_px`` pixels).
Coordinates are level-0 pixels. An ``atypical`` column (1/0, true/false, atypical/normal, empty: not
said) gives a mitotic figure's subtype. Errors name the line.

Written: one row per object of the review store with its slide, kind, id, box, centre, label, score,
status, source, p_atypical and atypical (see :data:`EXPORT_COLUMNS`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from midog_viewer.classes import canonical_class
from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import atomic
from midog_viewer.formats.records import ImageAnnotations, finish, parse_subtype, point_box

POINT_BOX_PX = 50.0
_IMAGE = ("image", "slide", "file_name", "filename", "image_name")
_LABEL = ("label", "class", "category", "classification")
EXPORT_COLUMNS = ("slide", "kind", "id", "x1", "y1", "x2", "y2", "cx", "cy", "label", "score", "status", "source", "run_id",
                  "p_atypical", "atypical")


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    return next((header.index(name) for name in names if name in header), None)


def read(path: str | Path, point_box_px: float = POINT_BOX_PX) -> list[ImageAnnotations]:
    """Parse a CSV of boxes or centre points into boxes per image (in order of first appearance)."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise AnnotationFormatError(f"cannot read {path}: {exc}.") from exc
    images: dict[str, ImageAnnotations] = {}
    boxes: dict[str, list[list[float]]] = {}
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise AnnotationFormatError(f"{path.name} is empty; it needs a header line.") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise AnnotationFormatError(f"{path.name} line 1 is not CSV text ({exc}).") from exc
        image_col, label_col = _pick(header, _IMAGE), _pick(header, _LABEL)
        subtype_col = _pick(header, ("atypical",))
        if image_col is None or label_col is None:
            raise AnnotationFormatError(
                f"{path.name} line 1 must name an image column ({', '.join(_IMAGE)}) and a class column ({', '.join(_LABEL)})."
            )
        if all(c in header for c in ("x1", "y1", "x2", "y2")):
            coord_cols = [header.index(c) for c in ("x1", "y1", "x2", "y2")]
            centre = False
        elif all(c in header for c in ("x", "y")):
            coord_cols = [header.index(c) for c in ("x", "y")] + [header.index(c) for c in ("w", "h") if c in header]
            centre = True
        else:
            raise AnnotationFormatError(f"{path.name} line 1 must name columns x1, y1, x2, y2 or x, y.")
        try:
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise AnnotationFormatError(f"{path.name} line {line} has {len(row)} fields, the header {len(header)}.")
                values = []
                for col in coord_cols:
                    try:
                        value = float(row[col])
                    except ValueError:
                        raise AnnotationFormatError(
                            f"{path.name} line {line}: {header[col]} is {row[col]!r}, not a number."
                        ) from None
                    if not math.isfinite(value):
                        raise AnnotationFormatError(f"{path.name} line {line}: {header[col]} is not finite.")
                    values.append(value)
                if centre:
                    x, y = values[:2]
                    if len(values) == 4:
                        box = [x - values[2] / 2, y - values[3] / 2, x + values[2] / 2, y + values[3] / 2]
                    else:
                        box = point_box(x, y, point_box_px)
                else:
                    box = values
                if box[2] < box[0] or box[3] < box[1]:
                    raise AnnotationFormatError(f"{path.name} line {line}: the box has x2 < x1 or y2 < y1.")
                name = row[image_col].strip()
                label = canonical_class(row[label_col])
                if not name or not label:
                    raise AnnotationFormatError(f"{path.name} line {line} has an empty image or class.")
                image = images.setdefault(name, ImageAnnotations(name))
                image.labels.append(label)
                if subtype_col is not None:
                    image.atypical.append(parse_subtype(row[subtype_col], f"{path.name} line {line}"))
                boxes.setdefault(name, []).append(box)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise AnnotationFormatError(f"{path.name} line {reader.line_num} is not valid CSV ({exc}).") from exc
    return finish(images, boxes)


def write(path: str | Path, rows: list[dict]) -> None:
    """Write rows (dicts keyed by :data:`EXPORT_COLUMNS`) as CSV with a header, atomically."""
    with atomic.open_text(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(EXPORT_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
