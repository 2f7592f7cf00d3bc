"""A bound on what one read of a TIFF decodes, and uncompressed strips read in row bands.

tifffile decodes a tile or strip whole, so a small file whose image sits in one deflate strip of
20,000 × 20,000 px would decode 1.2 GB to show one pixel (a "strip bomb"). Two rules keep every read
bounded, whatever the file says:

* an uncompressed strip of more than :data:`BAND_STRIP_BYTES` is never decoded whole: its rows lie at
  known offsets, so :class:`UncompressedStrips` reads just the row band (or row spans) a slice needs;
* a compressed tile or strip that decodes to more than :data:`MAX_DECODE_BYTES` is refused before
  anything is decoded (:func:`oversized_chunk_message`), since deflate, LZW or JPEG data cannot be
  entered in the middle.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

#: Most bytes one compressed tile or strip may decode to; a MIDOG HPF (7215 × 5412 RGB, 117 MB) fits.
MAX_DECODE_BYTES = 128 * 10**6
#: Uncompressed strips larger than this are read in row bands instead of whole.
BAND_STRIP_BYTES = 16 * 2**20
#: About how many bytes one row band of an :class:`UncompressedStrips` covers (its ``chunks``).
BAND_BYTES = 4 * 2**20


def decoded_bytes(page: tifffile.TiffPage) -> int:
    """Bytes tifffile allocates to decode one tile or strip of ``page``."""
    return math.prod(int(n) for n in page.chunks) * page.dtype.itemsize


def band_readable(page: tifffile.TiffPage) -> bool:
    """True for uncompressed 8-bit strips with interleaved samples: any row can be read alone."""
    return (
        page.compression == tifffile.COMPRESSION.NONE
        and not page.is_tiled
        and page.bitspersample == 8
        and page.fillorder == 1
        and (page.planarconfig == tifffile.PLANARCONFIG.CONTIG or page.samplesperpixel == 1)
        and page.dtype == np.uint8
    )


def human_bytes(count: int) -> str:
    """``count`` bytes as "1.2 GB" or "140 MB" (decimal units)."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


def oversized_chunk_message(name: str, page: tifffile.TiffPage, level: int) -> str | None:
    """The refusal for ``page`` when one of its compressed tiles/strips decodes past the bound, else None."""
    size = decoded_bytes(page)
    if size <= MAX_DECODE_BYTES or band_readable(page):
        return None
    unit = "tiles" if page.is_tiled else "strips"
    where = "" if level == 0 else f" (pyramid level {level})"
    return (
        f"{name} stores its {page.imagewidth} × {page.imagelength} px image{where} in compressed {unit} that "
        f"decode to {human_bytes(size)} each; midog-viewer decodes at most {human_bytes(MAX_DECODE_BYTES)} "
        "at once, so convert it to a tiled TIFF first (e.g. vips tiffsave IN OUT --tile --pyramid)."
    )


class UncompressedStrips:
    """The (H, W) or (H, W, S) uint8 pixels of an uncompressed strip page, read row band by row band.

    Each slice opens the file, reads only the rows it covers (or, for a narrow slice, only its span of
    each row) and closes it again, so reads from several threads never share a file position.
    """

    def __init__(self, path: Path, page: tifffile.TiffPage, shape: tuple[int, ...]) -> None:
        self._path = path
        self.shape = tuple(int(n) for n in shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.uint8)
        self._height, self._width = int(page.imagelength), int(page.imagewidth)
        self._samples = int(page.samplesperpixel)
        self._row_bytes = self._width * self._samples
        self._rows_per_strip = max(1, min(int(page.rowsperstrip), self._height))
        self._offsets = [int(n) for n in page.dataoffsets]
        self._counts = [int(n) for n in page.databytecounts]
        rows = max(1, min(self._rows_per_strip, BAND_BYTES // max(1, self._row_bytes)))
        self.chunks = (rows, self._width) + self.shape[2:]

    def missing_rows(self) -> bool:
        """True when a strip holds fewer bytes than its rows need (a damaged or truncated file)."""
        strips = -(-self._height // self._rows_per_strip)
        if len(self._offsets) < strips:
            return True
        for k in range(strips):
            rows = min(self._rows_per_strip, self._height - k * self._rows_per_strip)
            if self._counts[k] < rows * self._row_bytes:
                return True
        return False

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        ky, kx = (tuple(key) + (slice(None), slice(None)))[:2]
        y0, y1, ys = ky.indices(self._height)
        x0, x1, xs = kx.indices(self._width)
        y1, x1 = max(y0, y1), max(x0, x1)
        out = self._read(y0, y1, x0, x1)[::ys, ::xs]
        out = out if self.ndim == 3 else out[:, :, 0]
        return out[(slice(None), slice(None)) + tuple(key[2:])]

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        s, rps, row = self._samples, self._rows_per_strip, self._row_bytes
        out = np.empty((y1 - y0, x1 - x0, s), np.uint8)
        if y1 <= y0 or x1 <= x0:
            return out
        whole_rows = 2 * (x1 - x0) >= self._width
        with open(self._path, "rb") as handle:
            for k in range(y0 // rps, (y1 - 1) // rps + 1):
                r0, r1 = max(y0, k * rps), min(y1, (k + 1) * rps)
                start = self._offsets[k] + (r0 - k * rps) * row
                if whole_rows:
                    rows = _read_exactly(handle, start, (r1 - r0) * row)
                    out[r0 - y0 : r1 - y0] = rows.reshape(r1 - r0, self._width, s)[:, x0:x1]
                    continue
                for r in range(r0, r1):
                    span = _read_exactly(handle, start + (r - r0) * row + x0 * s, (x1 - x0) * s)
                    out[r - y0] = span.reshape(x1 - x0, s)
        return out


def _read_exactly(handle: Any, offset: int, count: int) -> np.ndarray:
    handle.seek(offset)
    data = handle.read(count)
    if len(data) != count:
        raise OSError(f"the file ends {count - len(data)} bytes early")
    return np.frombuffer(data, np.uint8)
