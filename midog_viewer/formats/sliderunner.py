"""SlideRunner SQLite databases (``MIDOG.sqlite``, ``MITOS2012.sqlite``): read, and write so SlideRunner opens them.

SlideRunner keeps one row per annotation (``Annotations``: slide, type, ``agreedClass``), its
coordinates (``Annotations_coordinates``) and each expert's vote (``Annotations_label``). Types: 1 spot
and 4 special spot (one centre point: a square of ``point_box_px`` pixels, or ``point_box_um`` µm
where the slide's pixel size is known, becomes the box), 2 rectangle, 3 polygon and 5 circle (the
bounding box of their coordinates). The class is ``agreedClass``, or the latest vote where none was
agreed. Rows flagged ``deleted`` are skipped.

Written databases use the exact schema of ``MIDOG.sqlite`` (tables and triggers; the triggers call
``pycurrent_time``, ``generate_uuid`` and ``randcolor``, which SlideRunner registers and so do we while
writing); each annotation is a spot at its box centre, as in MIDOG.sqlite. A mitotic figure's subtype is a
property, not a class (SlideRunner's class stays "mitotic figure", so its counts and ours agree): the
annotation's ``description`` is ``atypical`` or ``normal``, which SlideRunner shows and we read back.
"""

from __future__ import annotations

import errno
import random
import sqlite3
import time
import uuid
from pathlib import Path

import numpy as np

from midog_viewer.classes import HARD_NEGATIVE, MIDOG_FILE_NAMES, MITOTIC_FIGURE, canonical_class
from midog_viewer.errors import AnnotationFormatError
from midog_viewer.formats import atomic
from midog_viewer.formats.records import ImageAnnotations, finish, midog_2021_mpp, parse_subtype, point_box

#: Default edge of the square around a spot annotation, in pixels (MIDOG's 50 px boxes).
POINT_BOX_PX = 50.0
SPOT, RECTANGLE, POLYGON, SPECIAL_SPOT, CIRCLE = 1, 2, 3, 4, 5
_POINT_TYPES = (SPOT, SPECIAL_SPOT)
_EXTENT_TYPES = (RECTANGLE, POLYGON, CIRCLE)

#: The schema of MIDOG.sqlite, verbatim, so SlideRunner treats our files like its own.
SCHEMA = [
    "CREATE TABLE `Annotations_label` (\t`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,\t`person`\tINTEGER,"
    "\t`class`\tINTEGER,   `exact_id` INTEGER,\t`annoId`\tINTEGER)",
    "CREATE TABLE `Annotations_coordinates` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`coordinateX`\tINTEGER,"
    "`coordinateY`\tINTEGER,`coordinateZ`\tINTEGER DEFAULT 0,`slide`\tINTEGER,`annoId`\tINTEGER,`orderIdx`\tINTEGER)",
    "CREATE TABLE `Annotations` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`slide`\tINTEGER,`guid`\tTEXT,"
    "`lastModified`\tREAL DEFAULT 1616148830.5508225,`deleted`\tINTEGER DEFAULT 0,`type`\tINTEGER,"
    "`agreedClass`\tINTEGER,`description` TEXT,`clickable` INTEGER DEFAULT 1)",
    "CREATE TABLE `Classes` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`name`\tTEXT,`color` TEXT)",
    "CREATE TABLE `Persons` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`name`\tTEXT,`isExactUser` INTEGER DEFAULT 0)",
    "CREATE TABLE `Slides` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`filename`\tTEXT,`width`\tINTEGER,"
    "`height`\tINTEGER,`directory` TEXT,`uuid` TEXT,`exactImageID` TEXT, `EXACTUSER` INTEGER DEFAULT 0)",
    "CREATE TABLE `Log` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT,`dateTime` FLOAT,`labelId` INTEGER)",
    "CREATE TRIGGER updateAnnotation_fromLabelUPDATE AFTER UPDATE ON Annotations_label BEGIN"
    " UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.annoId; END",
    "CREATE TRIGGER updateAnnotation_fromCoordsUPDATE AFTER UPDATE ON Annotations_coordinates BEGIN"
    " UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.annoId; END",
    "CREATE TRIGGER updateAnnotation_UPDATE AFTER UPDATE ON Annotations BEGIN"
    " UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.uid; END",
    "CREATE TRIGGER updateAnnotation_fromLabelINSERT AFTER INSERT ON Annotations_label BEGIN"
    " UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.annoId; END",
    "CREATE TRIGGER updateAnnotation_fromCoordsINSERT AFTER INSERT ON Annotations_coordinates BEGIN"
    " UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.annoId; END",
    "CREATE TRIGGER updateAnnotation_INSERT AFTER INSERT ON Annotations BEGIN"
    " UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.uid; END",
    "CREATE TRIGGER updateAnnotation_ins AFTER INSERT ON Annotations BEGIN"
    " UPDATE Annotations SET guid=generate_uuid() where uid==new.uid and guid is Null; END",
    "CREATE TRIGGER setRandomcolor AFTER INSERT ON Classes BEGIN"
    " UPDATE Classes SET color=randcolor() where uid==new.uid and color is Null; END",
]


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info(`{table}`)")}


def read(
    path: str | Path, point_box_px: float = POINT_BOX_PX, point_box_um: float | None = None
) -> list[ImageAnnotations]:
    """Parse a SlideRunner database into boxes per slide (every listed slide, labelled or not)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationFormatError(f"{path} does not exist.")
    if not (point_box_px > 0) or (point_box_um is not None and not point_box_um > 0):
        raise AnnotationFormatError("the box around a point annotation must have a positive size.")
    try:  # as_uri() percent-encodes '%', '#', '?' and spaces, so the name is the file's own
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise AnnotationFormatError(f"cannot open {path} as SQLite: {exc}.") from exc
    try:
        return _read(db, path, point_box_px, point_box_um)
    except sqlite3.DatabaseError as exc:
        raise AnnotationFormatError(f"{path} is not a readable SlideRunner database ({exc}).") from exc
    finally:
        db.close()


def _read(db: sqlite3.Connection, path: Path, point_box_px: float, point_box_um: float | None) -> list[ImageAnnotations]:
    for table, needed in (
        ("Slides", {"uid", "filename"}),
        ("Classes", {"uid", "name"}),
        ("Annotations", {"uid", "slide", "type", "agreedClass"}),
        ("Annotations_coordinates", {"uid", "coordinateX", "coordinateY", "annoId"}),
        ("Annotations_label", {"uid", "class", "annoId"}),
    ):
        missing = needed - _columns(db, table)
        if missing:
            raise AnnotationFormatError(f"{path.name} is not a SlideRunner database: table {table} lacks {sorted(missing)}.")
    is_midog = "midog" in path.stem.lower()
    slide_columns = _columns(db, "Slides")
    size_sql = "width, height" if {"width", "height"} <= slide_columns else "NULL, NULL"
    images: dict[str, ImageAnnotations] = {}
    names_by_uid: dict[int, str] = {}
    for uid, filename, width, height in db.execute(f"SELECT uid, filename, {size_sql} FROM Slides ORDER BY uid"):
        if not isinstance(filename, str) or not filename.strip():
            raise AnnotationFormatError(f"{path.name} Slides row uid={uid} has no filename.")
        for key, value in (("width", width), ("height", height)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise AnnotationFormatError(f"{path.name} Slides row uid={uid} has {key} {value!r}, not a positive integer.")
        if uid in names_by_uid:
            raise AnnotationFormatError(f"{path.name} Slides uid={uid} is used by two rows.")
        if filename in images:
            raise AnnotationFormatError(f"{path.name} Slides lists {filename!r} twice.")
        names_by_uid[uid] = filename
        images[filename] = ImageAnnotations(filename, width, height, midog_2021_mpp(filename) if is_midog else None)
    classes = {}
    for uid, name in db.execute("SELECT uid, name FROM Classes"):
        if not isinstance(name, str):
            raise AnnotationFormatError(f"{path.name} Classes row uid={uid} has no name.")
        if uid in classes:  # a second class under the same id would relabel the first one's annotations
            raise AnnotationFormatError(f"{path.name} Classes uid={uid} is used by two classes.")
        classes[uid] = canonical_class(name)
    latest_vote = dict(db.execute("SELECT annoId, class FROM Annotations_label ORDER BY uid"))
    coordinates: dict[int, list[tuple[float, float]]] = {}
    for uid, x, y, anno in db.execute(
        "SELECT uid, coordinateX, coordinateY, annoId FROM Annotations_coordinates ORDER BY annoId, orderIdx, uid"
    ):
        for axis, value in (("coordinateX", x), ("coordinateY", y)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise AnnotationFormatError(
                    f"{path.name} Annotations_coordinates row uid={uid} has {axis} {value!r}, not a number."
                )
        coordinates.setdefault(anno, []).append((float(x), float(y)))
    deleted_sql = "deleted" if "deleted" in _columns(db, "Annotations") else "0"
    description_sql = "description" if "description" in _columns(db, "Annotations") else "NULL"
    boxes: dict[str, list[list[float]]] = {}
    for uid, slide, kind, agreed, deleted, description in db.execute(
        f"SELECT uid, slide, type, agreedClass, {deleted_sql}, {description_sql} FROM Annotations ORDER BY uid"
    ):
        if deleted:
            continue
        where = f"{path.name} Annotations row uid={uid}"
        if slide not in names_by_uid:
            raise AnnotationFormatError(f"{where} names slide {slide!r}, which Slides lacks.")
        label_id = agreed if agreed is not None else latest_vote.get(uid)
        if label_id not in classes:
            raise AnnotationFormatError(f"{where} has class {label_id!r}, which Classes lacks.")
        points = coordinates.get(uid)
        if not points:
            raise AnnotationFormatError(f"{where} has no coordinates.")
        image = images[names_by_uid[slide]]
        if kind in _POINT_TYPES:
            size = point_box_px
            if point_box_um is not None and image.mpp:
                size = point_box_um / image.mpp
            box = point_box(points[0][0], points[0][1], size)
        elif kind in _EXTENT_TYPES:
            xs, ys = zip(*points)
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            raise AnnotationFormatError(f"{where} has annotation type {kind!r}, which SlideRunner does not define.")
        boxes.setdefault(image.name, []).append(box)
        image.labels.append(classes[label_id])
        said = str(description).strip().lower() if description is not None else ""
        image.atypical.append(parse_subtype(said, where) if said in ("atypical", "normal") else None)  # else free text
    return finish(images, boxes)


def _sliderunner_functions(db: sqlite3.Connection) -> None:
    """The SQL functions SlideRunner's triggers call."""
    db.create_function("pycurrent_time", 0, time.time)
    db.create_function("generate_uuid", 0, lambda: str(uuid.uuid4()))
    rng = random.Random(0)

    def random_colour() -> str:
        return "#%02x%02x%02x" % (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    db.create_function("randcolor", 0, random_colour)


def write(path: str | Path, images: list[ImageAnnotations], person: str = "midog-viewer") -> None:
    """Write boxes per image as a SlideRunner database with MIDOG.sqlite's schema (spots at box centres).

    The database is built in memory, then serialised into an atomic write (an unnamed temporary file: a kill
    at any moment leaves the old file or the new one and nothing else). Python 3.10 has no ``serialize``: there
    it is copied with ``Connection.backup`` into :func:`~midog_viewer.formats.atomic.replace_file`'s hidden
    temporary file, without a journal.
    """
    labels = [MITOTIC_FIGURE, HARD_NEGATIVE] + sorted(
        {lab for image in images for lab in image.labels} - {MITOTIC_FIGURE, HARD_NEGATIVE}
    )
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        _sliderunner_functions(db)
        db.execute("BEGIN")
        for statement in SCHEMA:
            db.execute(statement)
        db.execute("INSERT INTO Persons(name) VALUES (?)", (person,))
        class_ids = {}
        for label in labels:
            class_ids[label] = db.execute("INSERT INTO Classes(name) VALUES (?)", (MIDOG_FILE_NAMES.get(label, label),)).lastrowid
        for image in images:
            slide = db.execute(
                "INSERT INTO Slides(filename, width, height) VALUES (?, ?, ?)", (image.name, image.width, image.height)
            ).lastrowid
            for box, label, atypical in zip(np.asarray(image.boxes, dtype=float).tolist(), image.labels, image.subtypes()):
                description = None if atypical is None else ("atypical" if atypical else "normal")
                anno = db.execute("INSERT INTO Annotations(slide, type, agreedClass, description) VALUES (?, ?, ?, ?)",
                                  (slide, SPOT, class_ids[label], description)).lastrowid
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2  # SQLite keeps .5 centres as REAL
                db.execute(
                    "INSERT INTO Annotations_coordinates(coordinateX, coordinateY, slide, annoId, orderIdx)"
                    " VALUES (?, ?, ?, ?, 1)",
                    (cx, cy, slide, anno),
                )
                db.execute("INSERT INTO Annotations_label(person, class, annoId) VALUES (1, ?, ?)", (class_ids[label], anno))
        db.execute("COMMIT")
        if hasattr(db, "serialize"):  # Python >= 3.11: the bytes go through an unnamed temporary file
            atomic.write_bytes(path, db.serialize())
        else:  # Python 3.10: a named temporary file (a kill at the wrong instant leaves it, swept next time)
            atomic.replace_file(path, lambda temp: _copy_database(db, temp))
    finally:
        db.close()


def _copy_database(db: sqlite3.Connection, temp: Path) -> None:
    """Copy ``db`` into the new file ``temp`` (no journal beside it); SQLite's errors become OS errors."""
    try:
        target = sqlite3.connect(temp, isolation_level=None)
    except sqlite3.Error as exc:
        raise OSError(errno.EIO, str(exc)) from exc
    try:
        target.execute("PRAGMA journal_mode=OFF")
        db.backup(target)
    except sqlite3.Error as exc:
        raise OSError(errno.EIO, str(exc)) from exc
    finally:
        target.close()
