"""Training images from a folder of patches and a CSV of object centres (the form crop datasets come in).

The points CSV has one row per labelled object: an image column (``image``, ``file``, ``file_name``,
``filename`` or ``image_name``: a path relative to the image folder), ``x`` and ``y`` (the centre, in that
image's pixels) and a class column (``label``, ``class``, ``category`` or ``classification``); optional
``mpp`` (µm/px) and ``slide`` columns. An optional image table (``file``/``image``, ``mpp``, ``slide``,
``source``) names every image of the data set, also those without any object, which are background; without
it every image file under the folder is used. Centres become square boxes of :data:`MIDOG_BOX_UM` (the
MIDOG convention: 50 px at 0.25 µm/px), scaled to each image's pixel spacing. Small images (crops) are held
in memory; bad input is one :class:`TrainingError` naming the file and line, before anything is trained.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midog_viewer.classes import CLASS_NAMES, canonical_class
from midog_viewer.errors import MidogError, TrainingError
from midog_viewer.io import IMAGE_SUFFIXES
from midog_viewer.train.sources import DEFAULT_MPP, LabelledImage

#: Side of the box a labelled centre becomes, in µm (MIDOG: 50 px boxes at 0.25 µm/px).
MIDOG_BOX_UM = 12.5
#: Images with at most this many pixels are read once and held in memory.
IN_MEMORY_PIXELS = 1024 * 1024
_IMAGE_COLUMNS = ("image", "file", "file_name", "filename", "image_name")
_CLASS_COLUMNS = ("label", "class", "category", "classification")


@dataclass
class _ImageInfo:
    path: Path
    mpp: float | None = None
    slide: str = ""
    source: str = ""


def images_from_points(
    points_csv: str | Path, images_dir: str | Path, image_table: str | Path | None = None
) -> list[LabelledImage]:
    """Labelled images of a folder of patches with a CSV of object centres (see the module docstring)."""
    points_csv, images_dir = Path(points_csv), Path(images_dir)
    if not images_dir.is_dir():
        raise TrainingError(f"image folder not found: {images_dir}.")
    infos = _read_image_table(Path(image_table), images_dir) if image_table is not None else _scan(images_dir)
    objects = _read_points(points_csv, images_dir, infos, table=image_table is not None)
    records = []
    for name, info in infos.items():
        rows = objects.get(name, [])
        records.append(_labelled_image(name, info, rows))
    return records


def _scan(images_dir: Path) -> dict[str, _ImageInfo]:
    found = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise TrainingError(f"{images_dir} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
    return {p.relative_to(images_dir).as_posix(): _ImageInfo(p) for p in found}


def _inside(images_dir: Path, name: str, where: str) -> Path:
    """The image ``name`` as a file inside ``images_dir``; names that leave the folder are refused."""
    relative = Path(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise TrainingError(f"{where}: image name {name!r} must be a path inside the image folder.")
    return images_dir / relative


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            rows = [(n, row) for n, row in enumerate(reader, start=2) if any(cell.strip() for cell in row)]
    except FileNotFoundError as exc:
        raise TrainingError(f"file not found: {path}.") from exc
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read {path} as CSV text: {exc}.") from exc
    if not header:
        raise TrainingError(f"{path} is empty; it needs a header line.")
    return header, rows


def _column(header: list[str], names: tuple[str, ...], path: Path, required: bool = True) -> int | None:
    index = next((header.index(n) for n in names if n in header), None)
    if index is None and required:
        raise TrainingError(f"{path} line 1 must name a column {' or '.join(names)}.")
    return index


def _cell(row: list[str], index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


def _spacing(text: str, where: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise TrainingError(f"{where}: pixel spacing {text!r} is not a number.") from None
    if not math.isfinite(value) or value <= 0:
        raise TrainingError(f"{where}: pixel spacing must be a positive number of µm/px, not {text}.")
    return value


def _read_image_table(path: Path, images_dir: Path) -> dict[str, _ImageInfo]:
    header, rows = _rows(path)
    name_col = _column(header, _IMAGE_COLUMNS, path)
    mpp_col, slide_col = _column(header, ("mpp",), path, False), _column(header, ("slide",), path, False)
    source_col = _column(header, ("source",), path, False)
    infos: dict[str, _ImageInfo] = {}
    for n, row in rows:
        where = f"{path.name} line {n}"
        name = _cell(row, name_col)
        file = _inside(images_dir, name, where)
        if not file.is_file():
            raise TrainingError(f"{where}: image not found: {file}.")
        infos[Path(name).as_posix()] = _ImageInfo(
            file, _spacing(_cell(row, mpp_col), where), _cell(row, slide_col), _cell(row, source_col)
        )
    if not infos:
        raise TrainingError(f"{path} names no image.")
    return infos


def _read_points(
    path: Path, images_dir: Path, infos: dict[str, _ImageInfo], table: bool
) -> dict[str, list[tuple[float, float, int]]]:
    header, rows = _rows(path)
    name_col, label_col = _column(header, _IMAGE_COLUMNS, path), _column(header, _CLASS_COLUMNS, path)
    x_col, y_col = _column(header, ("x",), path), _column(header, ("y",), path)
    mpp_col, slide_col = _column(header, ("mpp",), path, False), _column(header, ("slide",), path, False)
    objects: dict[str, list[tuple[float, float, int]]] = {}
    for n, row in rows:
        where = f"{path.name} line {n}"
        name = Path(_cell(row, name_col)).as_posix()
        if name not in infos and table:
            raise TrainingError(f"{where}: image {name!r} is not in the image table.")
        if name not in infos:
            file = _inside(images_dir, _cell(row, name_col), where)
            if not file.is_file():
                raise TrainingError(f"{where}: image not found: {file}.")
            infos[name] = _ImageInfo(file)
        info = infos[name]
        label_text = _cell(row, label_col)
        canonical = canonical_class(label_text)
        if canonical not in CLASS_NAMES:
            raise TrainingError(f"{where}: unknown class {label_text!r} (known: {', '.join(CLASS_NAMES)}).")
        try:
            x, y = float(_cell(row, x_col)), float(_cell(row, y_col))
        except ValueError:
            raise TrainingError(f"{where}: x and y must be numbers.") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise TrainingError(f"{where}: x and y must be finite numbers.")
        spacing = _spacing(_cell(row, mpp_col), where)
        if spacing is not None:
            info.mpp = spacing
        if _cell(row, slide_col):
            info.slide = _cell(row, slide_col)
        objects.setdefault(name, []).append((x, y, CLASS_NAMES.index(canonical)))
    return objects


def _labelled_image(name: str, info: _ImageInfo, rows: list[tuple[float, float, int]]) -> LabelledImage:
    from midog_viewer.io import open_slide

    try:
        slide = open_slide(info.path)
    except MidogError as exc:
        raise TrainingError(f"cannot read training image {info.path}: {exc}") from exc
    width, height = int(slide.width), int(slide.height)
    mpp = info.mpp or float(getattr(slide, "mpp", None) or DEFAULT_MPP)
    pixels = None
    if width * height <= IN_MEMORY_PIXELS:
        pixels = np.ascontiguousarray(np.asarray(slide.read_region(0, 0, width, height))[..., :3])
    close = getattr(slide, "close", None)
    if close is not None:
        close()
    half = MIDOG_BOX_UM / mpp / 2
    boxes, labels = [], []
    for x, y, label in rows:
        if not (0 <= x <= width and 0 <= y <= height):
            raise TrainingError(f"{name}: the point ({x:g}, {y:g}) lies outside the {width} × {height} image.")
        boxes.append((x - half, y - half, x + half, y + half))
        labels.append(label)
    return LabelledImage(
        key=name,
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        width=width,
        height=height,
        mpp=mpp,
        path=info.path,
        pixels=pixels,
        slide=info.slide,
        source=info.source,
    )
