"""Plain records the store hands out: slides, HPF regions, log rows and columnar object tables.

Also the checks of boxes and regions every writer and query shares, so each rule is written once.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.status import Verdict, colour_for


@dataclass(frozen=True)
class Slide:
    """A slide row: ``path`` is absolute, or a bare file name when registered by an import."""

    id: int
    path: str
    name: str
    mpp: float | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class HPFRegion:
    """A user-drawn high-power field, level-0 pixels."""

    id: int
    slide_id: int
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Decision:
    """One row of the decision log."""

    id: int
    slide_id: int
    object_kind: str
    object_id: int
    verdict: Verdict
    label: str | None
    target_id: int | None
    reviewer: str
    decided_at: str


_COLUMNS = ("id", "kind", "x1", "y1", "x2", "y2", "score", "label", "status", "source", "run_id", "p_atypical",
            "atypical", "subtype_decided")
#: ``ObjectTable.atypical`` of an object whose subtype nobody knows (no classifier ran, no reviewer said).
SUBTYPE_UNKNOWN = -1


@dataclass(frozen=True)
class ObjectTable:
    """Columnar objects of one slide: every field is a numpy array of the same length.

    ``id`` int64 (unique within ``kind``), ``kind`` "detection" | "annotation", ``x1 y1 x2 y2`` float64
    level-0 pixels, ``score`` float64 (NaN for annotations), ``label`` str, ``status`` :class:`Status`
    values (str), ``source`` str (annotations; "" for detections), ``run_id`` int64 (-1 for
    annotations), ``p_atypical`` float64 (the classifier's, NaN when none), ``atypical`` int8 subtype: the
    reviewer's decision, else the model's call or the imported file's, 1 atypical, 0 normal,
    :data:`SUBTYPE_UNKNOWN` when nobody said, ``subtype_decided`` bool: a reviewer's subtype decision set it
    (the last three default to unknown / not decided when not given).
    ``table["x1"]`` works as well as ``table.x1``.
    """

    id: np.ndarray
    kind: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    score: np.ndarray
    label: np.ndarray
    status: np.ndarray
    source: np.ndarray
    run_id: np.ndarray
    p_atypical: np.ndarray | None = None
    atypical: np.ndarray | None = None
    subtype_decided: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.id)
        if self.p_atypical is None:
            object.__setattr__(self, "p_atypical", np.full(n, np.nan))
        if self.atypical is None:
            object.__setattr__(self, "atypical", np.full(n, SUBTYPE_UNKNOWN, dtype=np.int8))
        if self.subtype_decided is None:
            object.__setattr__(self, "subtype_decided", np.zeros(n, dtype=bool))

    def atypical_mask(self) -> np.ndarray:
        """Rows whose subtype is atypical."""
        return self.atypical == 1

    #: The columns a decision changes; geometry, scores and sources never change once stored.
    DECIDED_COLUMNS = ("status", "label", "atypical", "subtype_decided")

    def take_decided(self, row: int, other: ObjectTable, other_row: int) -> None:
        """Copy one object's decided state (:attr:`DECIDED_COLUMNS`) from a fresh read of the store.

        The one sanctioned change of a table: every table the store returns has its own arrays, so a
        session may keep its copy up to date after a decision without re-reading the slide; nothing else
        of the object may change.
        """
        if self.kind[row] != other.kind[other_row] or self.id[row] != other.id[other_row]:
            raise ValueError("take_decided: the rows are not the same object")
        for name in self.DECIDED_COLUMNS:
            getattr(self, name)[row] = getattr(other, name)[other_row]

    def __len__(self) -> int:
        return len(self.id)

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in _COLUMNS:
            raise KeyError(column)
        return getattr(self, column)

    def keys(self) -> tuple[str, ...]:
        return _COLUMNS

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float64 xyxy boxes."""
        return np.stack([self.x1, self.y1, self.x2, self.y2], axis=1).reshape(-1, 4)

    @property
    def centres(self) -> np.ndarray:
        """(N, 2) float64 box centres (x, y)."""
        return np.stack([(self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2], axis=1).reshape(-1, 2)

    def colours(self) -> list[str]:
        """The colour name of each row, by :func:`~midog_viewer.review.status.colour_for`."""
        return [colour_for(s) for s in self.status]

    def select(self, mask: np.ndarray) -> ObjectTable:
        """The rows where ``mask`` (bool array or index array) selects."""
        return ObjectTable(**{c: getattr(self, c)[mask] for c in _COLUMNS})

    @classmethod
    def from_rows(cls, rows: Sequence[tuple]) -> ObjectTable:
        """Build from rows ordered as the fields (id, kind, x1, y1, x2, y2, score, label, status, source, run_id,
        and optionally p_atypical, atypical)."""
        if not rows:
            return cls.empty()
        cols = list(zip(*rows))
        return cls(
            id=np.asarray(cols[0], dtype=np.int64),
            kind=np.asarray(cols[1], dtype=object),
            x1=np.asarray(cols[2], dtype=np.float64),
            y1=np.asarray(cols[3], dtype=np.float64),
            x2=np.asarray(cols[4], dtype=np.float64),
            y2=np.asarray(cols[5], dtype=np.float64),
            score=np.asarray([np.nan if s is None else s for s in cols[6]], dtype=np.float64),
            label=np.asarray(cols[7], dtype=object),
            status=np.asarray(cols[8], dtype=object),
            source=np.asarray(cols[9], dtype=object),
            run_id=np.asarray(cols[10], dtype=np.int64),
            p_atypical=np.asarray([np.nan if p is None else p for p in cols[11]], dtype=np.float64)
            if len(cols) > 11 else None,
            atypical=np.asarray([SUBTYPE_UNKNOWN if a is None else a for a in cols[12]], dtype=np.int8)
            if len(cols) > 12 else None,
            subtype_decided=np.asarray(cols[13], dtype=bool) if len(cols) > 13 else None,
        )

    @classmethod
    def empty(cls) -> ObjectTable:
        floats = np.zeros(0, dtype=np.float64)
        objects = np.zeros(0, dtype=object)
        ints = np.zeros(0, dtype=np.int64)
        return cls(ints, objects, floats, floats, floats, floats, floats, objects, objects, objects, ints, floats,
                   np.zeros(0, dtype=np.int8), np.zeros(0, dtype=bool))

    @staticmethod
    def concatenate(tables: Iterable[ObjectTable]) -> ObjectTable:
        tables = list(tables)
        if not tables:
            return ObjectTable.empty()
        return ObjectTable(**{c: np.concatenate([getattr(t, c) for t in tables]) for c in _COLUMNS})


def file_identity(path: Path) -> tuple[int | None, float | None]:
    try:
        st = path.stat()
    except OSError:
        return None, None
    return int(st.st_size), float(st.st_mtime)


def check_boxes(boxes: Any, what: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1 and array.size == 4:
        array = array.reshape(1, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ReviewStoreError(f"{what} must be an (N, 4) array of x1, y1, x2, y2, not shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ReviewStoreError(f"{what} contain NaN or infinite coordinates.")
    if np.any(array[:, 2] < array[:, 0]) or np.any(array[:, 3] < array[:, 1]):
        raise ReviewStoreError(f"{what} must have x2 >= x1 and y2 >= y1 (xyxy order).")
    return array


def check_region(region: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in region)
    except (TypeError, ValueError) as exc:
        raise ReviewStoreError(f"a region is (x, y, w, h) in level-0 pixels, not {region!r}.") from exc
    if not all(np.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise ReviewStoreError(f"a region needs finite x, y and non-negative w, h, not {region!r}.")
    return x, y, w, h


def now_utc() -> str:
    """The time a row is written: UTC, ISO 8601 with microseconds and a Z."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def default_reviewer() -> str:
    """The OS login name (the reviewer a store records when none is given)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"
