"""Open any supported slide as a lazy pyramid: :func:`open_slide` and the :class:`Slide` it returns.

The file's signature (not its name) decides the reader: TIFF magic → tifffile (SVS, NDPI, OME-TIFF,
pyramidal or plain TIFF), PNG/JPEG magic → Pillow, DICOM preamble or a folder of ``.dcm`` files →
wsidicom. Anything else raises :class:`~midog_viewer.errors.SlideError` with one sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.errors import SlideError

#: Every value :attr:`Slide.format` can take.
FORMATS = ("aperio-svs", "hamamatsu-ndpi", "ome-tiff", "pyramidal-tiff", "tiff", "png", "jpeg", "dicom")

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_SUPPORTED = "SVS, NDPI, (OME-)TIFF, PNG, JPEG or DICOM"


class Slide:
    """A slide opened lazily: pyramid levels (level 0 first, each (H, W, 3) uint8 RGB) plus metadata.

    ``levels`` are array-likes whose slices decode only the tiles they touch; ``downsamples[i]`` is
    the level-0 size over level i's size; ``mpp`` is µm per level-0 pixel or None when unknown;
    ``tile_size`` is (width, height) of the level-0 tiles or None for strip/untiled images.
    """

    def __init__(
        self,
        path: Path,
        format: str,
        levels: list[Any],
        mpp: float | None,
        tile_size: tuple[int, int] | None,
        handle: Any = None,
    ) -> None:
        self.path = path
        self.format = format
        self.levels = levels
        self.mpp = mpp
        self.tile_size = tile_size
        self._handle = handle
        self.height, self.width = (int(n) for n in levels[0].shape[:2])
        self.downsamples = [
            (self.width / level.shape[1] + self.height / level.shape[0]) / 2.0 for level in levels
        ]

    def read_region(self, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
        """Pixels of the (w × h) box at (x, y) of ``level``, in that level's pixels, as (h, w, 3) uint8.

        Parts of the box outside the slide are white (255), like empty glass.
        """
        if w < 0 or h < 0:
            raise SlideError(f"a region of {w}×{h} pixels is not a region; width and height must be ≥ 0.")
        if not 0 <= level < len(self.levels):
            raise SlideError(f"{self.path.name} has levels 0–{len(self.levels) - 1}, not level {level}.")
        x, y, w, h = int(x), int(y), int(w), int(h)
        data = self.levels[level]
        height, width = data.shape[:2]
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            try:
                out[y0 - y : y1 - y, x0 - x : x1 - x] = np.asarray(data[y0:y1, x0:x1])
            except Exception as exc:  # a decoder error mid-file: the slide is damaged there
                raise SlideError(f"{self.path.name} could not be read at x={x0}, y={y0} ({exc}).") from exc
        return out

    def summary(self) -> dict[str, Any]:
        """Path, format, mpp, level-0 tile size and levels as plain JSON types (``midog-viewer info --json``)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "mpp": self.mpp,
            "tile": list(self.tile_size) if self.tile_size else None,
            "levels": [
                {"width": int(level.shape[1]), "height": int(level.shape[0]), "downsample": float(downsample)}
                for level, downsample in zip(self.levels, self.downsamples)
            ],
        }

    def close(self) -> None:
        """Release the open file (idempotent)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Slide({str(self.path)!r}, format={self.format!r}, size={self.width}×{self.height}, "
            f"levels={len(self.levels)}, mpp={self.mpp})"
        )


def _signature(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(132)


def _is_dicom_file(head: bytes) -> bool:
    return head[128:132] == b"DICM"


def _dicom_folder(path: Path) -> bool:
    """A folder whose files include at least one DICOM file (OSError when a file cannot be read)."""
    for child in sorted(path.iterdir()):
        if child.is_file() and child.stat().st_size >= 132 and _is_dicom_file(_signature(child)):
            return True
    return False


def _unreadable(path: Path, exc: OSError) -> SlideError:
    """The one-line refusal for a file or folder the operating system will not let us read."""
    where = f" ({Path(exc.filename).name})" if exc.filename and Path(exc.filename) != path else ""
    return SlideError(f"{path} cannot be read{where}: {exc.strerror or exc}.")


def open_slide(path: str | Path) -> Slide:
    """Open ``path`` lazily as a :class:`Slide`; raise :class:`SlideError` (one sentence) if it cannot be read."""
    path = Path(path).expanduser()
    try:
        if not path.exists():
            raise SlideError(f"{path} does not exist.")
        folder = path.is_dir()
        if folder and not _dicom_folder(path):
            raise SlideError(f"{path} is a folder without DICOM files; give a slide file ({_SUPPORTED}).")
        if not folder and not path.is_file():
            raise SlideError(f"{path} is not a regular file.")
        head = b"" if folder else _signature(path)
    except OSError as exc:  # permission denied on the file, its folder or a file in a DICOM folder
        raise _unreadable(path, exc) from exc
    if folder:
        return _open_dicom(path)
    if not head:
        raise SlideError(f"{path} is empty (0 bytes).")
    if head[:4] in _TIFF_MAGIC:
        from midog_viewer.io.tiff import open_tiff

        parts = open_tiff(path)
        return Slide(path, parts.format, parts.levels, parts.mpp, parts.tile_size, parts.handle)
    if head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC):
        from midog_viewer.io.raster import open_raster

        raster = open_raster(path)
        return Slide(path, raster.format, raster.levels, raster.mpp, None)
    if _is_dicom_file(head):
        return _open_dicom(path)
    raise SlideError(f"{path.name} is not a slide: it is no {_SUPPORTED} file.")


def _open_dicom(path: Path) -> Slide:
    from midog_viewer.io.dicom import open_dicom

    parts = open_dicom(path)
    return Slide(path, "dicom", parts.levels, parts.mpp, parts.tile_size, parts.handle)
