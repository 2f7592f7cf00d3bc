"""Which stored slide a file is: by path, size and modification time, else by its content fingerprint.

The rules, in order (each step runs only when the one before found nothing):

1. the same path, size and mtime: the same slide (an older row gets its fingerprint filled in);
2. a slide an import registered by file name only: bound to the first real file of that name;
3. a slide with the same fingerprint at this path (touched) or at a path that no longer exists (moved,
   renamed, or copied to another disk and the old one gone): the same scan; the row now follows this file
   (path, name, size, mtime updated) and :class:`SlideLink` says where it was. A copy beside an original
   that is still there gets its own review (two files, two reviews, as for two same-named slides in two
   folders) and the link names the original's review;
4. an older row without a fingerprint at the same path with the same size (a touched file), or with the
   same name and size whose file is gone (a moved one): linked, as the best evidence there is;
5. otherwise a new slide. When a slide was stored under this path, or under this name at a path that no
   longer exists, the new file's content differs: the link says so, and the earlier review stays in the
   store under its own id (never silently linked, never silently lost).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.records import file_identity, now_utc

SAME, NEW, BOUND, MOVED, COPIED, TOUCHED, CHANGED = "same", "new", "bound", "moved", "copied", "touched", "changed"


@dataclass(frozen=True)
class SlideLink:
    """How a file was matched to a stored slide: its id, how (one of the names above), and from where."""

    slide_id: int
    how: str
    name: str
    previous_path: str | None = None
    #: For ``changed``: the slide reviewed on the earlier content; for ``copied``: the original's slide.
    earlier_id: int | None = None

    def message(self) -> str:
        """One line for the dock's status or the CLI, or "" when there is nothing to say."""
        if self.how == MOVED:
            return f"found the review of {self.name} (moved from {self.previous_path})"
        if self.how == COPIED:
            return (f"{self.name} has the same content as {self.previous_path}, which is still there and keeps its "
                    f"review (slide id {self.earlier_id}); this copy gets a review of its own")
        if self.how == CHANGED:
            return (f"{self.name} is not the slide reviewed before as {self.previous_path} (different content): "
                    f"a new review starts; the earlier one stays in the store as slide id {self.earlier_id}")
        return ""


def needs_fingerprint(db: sqlite3.Connection, path: str | os.PathLike, name_only: bool) -> bool:
    """Whether linking ``path`` needs its fingerprint: a real file not known exactly with one."""
    raw = Path(path)
    if name_only or not raw.is_file() and not raw.is_dir():
        return False
    size, mtime = file_identity(raw)
    row = db.execute(
        "SELECT fingerprint FROM slides WHERE path = ? AND size_bytes IS ? AND mtime IS ? ORDER BY id LIMIT 1",
        (str(raw.resolve()), size, mtime),
    ).fetchone()
    return row is None or row[0] is None


def link_slide(
    db: sqlite3.Connection,
    path: str | os.PathLike,
    mpp: float | None,
    width: int | None,
    height: int | None,
    *,
    name_only: bool,
    fingerprint: str | None,
    reviewer: str,
) -> SlideLink:
    """Find or register the slide of ``path`` by the rules above (inside the caller's write transaction)."""
    if mpp is not None and not (np.isfinite(mpp) and mpp > 0):
        raise ReviewStoreError(f"pixel size must be a positive number of µm, not {mpp!r}.")
    raw = Path(path)
    on_disk = not name_only and raw.exists()
    stored_path = str(raw.resolve()) if on_disk else str(path)
    name = raw.name
    size, mtime = file_identity(raw) if on_disk else (None, None)
    fingerprint = fingerprint if on_disk else None

    def keep(slide_id: int, how: str, previous: str | None = None) -> SlideLink:
        db.execute(
            "UPDATE slides SET path = ?, name = ?, size_bytes = ?, mtime = ?, fingerprint = COALESCE(?, fingerprint),"
            " mpp = COALESCE(?, mpp), width = COALESCE(?, width), height = COALESCE(?, height) WHERE id = ?",
            (stored_path, name, size, mtime, fingerprint, mpp, width, height, slide_id),
        )
        return SlideLink(slide_id, how, name, previous)

    row = db.execute(
        "SELECT id FROM slides WHERE path = ? AND size_bytes IS ? AND mtime IS ? ORDER BY id LIMIT 1",
        (stored_path, size, mtime),
    ).fetchone()
    if row is not None:
        return keep(int(row[0]), SAME)
    if not on_disk:
        return _insert(db, stored_path, name, None, None, None, mpp, width, height, reviewer)
    row = db.execute("SELECT id FROM slides WHERE name = ? AND size_bytes IS NULL ORDER BY id LIMIT 1", (name,)).fetchone()
    if row is not None:
        return keep(int(row[0]), BOUND)
    if fingerprint is not None:
        rows = db.execute("SELECT id, path FROM slides WHERE fingerprint = ? ORDER BY id", (fingerprint,)).fetchall()
        if rows:  # prefer this very path (touched), then a file that is gone (moved)
            slide_id, old = min(rows, key=lambda r: (r[1] != stored_path, Path(r[1]).exists(), r[0]))
            if old == stored_path:
                return keep(int(slide_id), TOUCHED)
            if not Path(old).exists():
                return keep(int(slide_id), MOVED, old)
            link = _insert(db, stored_path, name, size, mtime, fingerprint, mpp, width, height, reviewer)
            return SlideLink(link.slide_id, COPIED, name, old, int(slide_id))
    same_path = db.execute(
        "SELECT id, size_bytes, fingerprint FROM slides WHERE path = ? ORDER BY id DESC LIMIT 1", (stored_path,)
    ).fetchone()
    if same_path is not None and same_path[2] is None and same_path[1] == size:
        return keep(int(same_path[0]), TOUCHED)
    earlier, previous = (int(same_path[0]), stored_path) if same_path is not None else (None, None)
    if earlier is None:
        for slide_id, old, old_size, old_fingerprint in db.execute(
            "SELECT id, path, size_bytes, fingerprint FROM slides WHERE name = ? AND size_bytes IS NOT NULL"
            " ORDER BY id DESC", (name,)
        ).fetchall():
            if Path(old).exists():
                continue  # another slide of the same name in another folder: a different slide, as it says
            if old_fingerprint is None and old_size == size:
                return keep(int(slide_id), MOVED, old)
            earlier, previous = int(slide_id), old
            break
    link = _insert(db, stored_path, name, size, mtime, fingerprint, mpp, width, height, reviewer)
    if earlier is None:
        return link
    return SlideLink(link.slide_id, CHANGED, name, previous, earlier)


def _insert(
    db: sqlite3.Connection, path: str, name: str, size: int | None, mtime: float | None, fingerprint: str | None,
    mpp: float | None, width: int | None, height: int | None, reviewer: str,
) -> SlideLink:
    cursor = db.execute(
        "INSERT INTO slides(path, name, size_bytes, mtime, mpp, width, height, added_at, added_by, fingerprint)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (path, name, size, mtime, mpp, width, height, now_utc(), reviewer, fingerprint),
    )
    return SlideLink(int(cursor.lastrowid), NEW, name)
