"""Lazy (H, W, 3) uint8 array-likes: the pyramid levels a :class:`~midog_viewer.io.Slide` hands to napari.

napari (and the detector's tiler) only ever slice a level, so each class here implements ``shape``,
``dtype``, ``ndim``, ``size`` and ``__getitem__`` and reads just the region the slice touches:

* :class:`RGBAdapter` turns a source that is not already (H, W, 3) uint8 (RGBA, grayscale, planar
  ``SYX``) into RGB one slice at a time.
* :class:`DownsampledLevel` is a 2× area-average of its parent, computed block by block on demand and
  kept in a small LRU cache, so a non-pyramidal image gets overview levels without ever holding the
  full image plus copies in memory. Blocks follow the parent's decode units (``read_chunks``, or
  ``chunks`` as zarr arrays have): full-width bands over a strip TIFF, whose strips would otherwise
  be decoded once per block column.
* :class:`StripView` passes a strip-chunked array through unchanged but tells napari narrower
  ``chunks``.

Two chunk shapes, then: ``read_chunks`` is what the source decodes at once (a full-width strip) and
guides our own block alignment; ``chunks`` is what napari sees, and napari widens every view to whole
``chunks``. Telling napari a strip's true width would make it upload a 7215-px-wide texture for a
1280-px canvas at each field-of-view change, so over strips ``chunks`` are at most ``BLOCK`` wide.
* :class:`RegionLevel` wraps any ``read(y0, y1, x0, x1)`` callable (e.g. a DICOM reader).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

#: Edge of the square blocks a :class:`DownsampledLevel` computes and caches, in its own pixels.
BLOCK = 512
#: Bytes of decoded blocks each :class:`DownsampledLevel` keeps (about 48 blocks of 512² RGB).
CACHE_BYTES = 48 * BLOCK * BLOCK * 3


def _axis_range(index: Any, length: int) -> tuple[int, int, int, bool]:
    """Resolve one index (slice or int) along an axis to (start, stop, step, keep_axis)."""
    if isinstance(index, slice):
        start, stop, step = index.indices(length)
        if step < 0:
            raise IndexError("negative steps are not supported on slide levels")
        return start, max(start, stop), step, True
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if i < 0:
            i += length
        if not 0 <= i < length:
            raise IndexError(f"index {index} is out of bounds for an axis of size {length}")
        return i, i + 1, 1, False
    raise IndexError(f"slide levels take slices and integers, not {type(index).__name__}")


def _expand_key(key: Any, ndim: int) -> tuple[Any, ...]:
    """Turn a numpy-style key into a tuple of exactly ``ndim`` items (Ellipsis expanded)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (ndim - len(key) + 1)
        key = key[:at] + fill + key[at + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices for a {ndim}-dimensional slide level")
    return key + (slice(None),) * (ndim - len(key))


class LazyRGBLevel(ABC):
    """Base of the (H, W, 3) uint8 array-likes: subclasses implement :meth:`read` of a level-pixel box."""

    dtype = np.dtype(np.uint8)
    ndim = 3
    #: (rows, columns, 3) the level is decoded in (None: any box costs the same).
    read_chunks: tuple[int, int, int] | None = None
    #: (rows, columns, 3) napari widens views to: ``read_chunks``, but at most ``BLOCK`` wide.
    chunks: tuple[int, int, int] | None = None

    def _set_read_chunks(self, rows: int, cols: int) -> None:
        self.read_chunks = (int(rows), int(cols), 3)
        self.chunks = (int(rows), min(int(cols), BLOCK), 3)

    def __init__(self, height: int, width: int) -> None:
        self.shape: tuple[int, int, int] = (int(height), int(width), 3)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1] * 3

    @abstractmethod
    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return pixels [y0:y1, x0:x1] (inside the level) as a (y1-y0, x1-x0, 3) uint8 array."""

    def __getitem__(self, key: Any) -> np.ndarray:
        ky, kx, kc = _expand_key(key, 3)
        y0, y1, ys, keep_y = _axis_range(ky, self.shape[0])
        x0, x1, xs, keep_x = _axis_range(kx, self.shape[1])
        if y1 <= y0 or x1 <= x0:
            out = np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        else:
            out = self.read(y0, y1, x0, x1)
        out = out[:: ys if keep_y else 1, :: xs if keep_x else 1]
        out = out[:, :, kc]
        if not keep_x:
            out = out[:, 0]
        if not keep_y:
            out = out[0]
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[:, :, :]
        return data if dtype is None else data.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


class RGBAdapter(LazyRGBLevel):
    """View an RGBA, grayscale or planar (channels-first) uint8 array-like as (H, W, 3) RGB, slice by slice.

    ``axes`` is tifffile's axes string of the source without its leading length-1 axes: ``"YXS"``
    (samples last, S = 1, 3 or 4) or ``"SYX"``/``"CYX"`` (planar) or ``"YX"`` (grayscale).
    """

    def __init__(self, source: Any, axes: str) -> None:
        self._source = source
        self._axes = axes
        if axes == "YX":
            height, width = source.shape
        elif axes == "YXS":
            height, width = source.shape[:2]
        elif axes in ("SYX", "CYX"):
            height, width = source.shape[1:]
        else:
            raise ValueError(f"unsupported axes {axes!r}")
        super().__init__(height, width)
        source_chunks = getattr(source, "chunks", None)
        if source_chunks:
            self._set_read_chunks(*(source_chunks[1:3] if axes in ("SYX", "CYX") else source_chunks[:2]))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self._axes == "YX":
            gray = np.asarray(self._source[y0:y1, x0:x1])
            return np.repeat(gray[:, :, None], 3, axis=2)
        if self._axes == "YXS":
            block = np.asarray(self._source[y0:y1, x0:x1])
            if block.shape[2] < 3:  # gray or gray + alpha
                return np.repeat(block[:, :, :1], 3, axis=2)
            return np.ascontiguousarray(block[:, :, :3])
        planes = np.asarray(self._source[:3, y0:y1, x0:x1])
        if planes.shape[0] < 3:
            planes = np.repeat(planes[:1], 3, axis=0)
        return np.ascontiguousarray(np.moveaxis(planes, 0, 2))


class StripView(LazyRGBLevel):
    """An (H, W, 3) uint8 array stored in full-width strips, unchanged, with napari-sized ``chunks``."""

    def __init__(self, source: Any) -> None:
        super().__init__(*source.shape[:2])
        self._source = source
        self._set_read_chunks(*source.chunks[:2])

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(self._source[y0:y1, x0:x1])


class RegionLevel(LazyRGBLevel):
    """A level read through a callable ``read_box(y0, y1, x0, x1) -> (h, w, 3) uint8`` (e.g. DICOM)."""

    def __init__(self, height: int, width: int, read_box: Callable[[int, int, int, int], np.ndarray]) -> None:
        super().__init__(height, width)
        self._read_box = read_box

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self._read_box(y0, y1, x0, x1)


class DownsampledLevel(LazyRGBLevel):
    """A 2× area-average of ``parent`` (any (H, W, 3) uint8 array-like), computed lazily block by block.

    Each block (about ``BLOCK``² pixels, shaped by :func:`_block_shape` to whole parent chunks) is
    computed from the matching region of the parent the first time a slice touches it and kept in an
    LRU cache of ``cache_bytes``; an odd last row/column is averaged with itself. Chained levels
    therefore read level 0 only where (and when) a view needs it.
    """

    def __init__(self, parent: Any, cache_bytes: int = CACHE_BYTES) -> None:
        height, width = parent.shape[:2]
        super().__init__((height + 1) // 2, (width + 1) // 2)
        parent_chunks = getattr(parent, "read_chunks", None) or getattr(parent, "chunks", None)
        self._block_rows, self._block_cols = _block_shape(parent_chunks, parent.shape[1], self.shape[1])
        self._set_read_chunks(self._block_rows, self._block_cols)
        self._parent = parent
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0
        self._lock = threading.Lock()

    def _block(self, by: int, bx: int) -> np.ndarray:
        with self._lock:
            block = self._cache.get((by, bx))
            if block is not None:
                self._cache.move_to_end((by, bx))
                return block
        ph, pw = self._parent.shape[:2]
        py0, px0 = 2 * by * self._block_rows, 2 * bx * self._block_cols
        py1, px1 = min(ph, py0 + 2 * self._block_rows), min(pw, px0 + 2 * self._block_cols)
        block = halve(np.asarray(self._parent[py0:py1, px0:px1]))
        with self._lock:
            self._cache[(by, bx)] = block
            self._cached += block.nbytes
            while self._cached > self._cache_bytes and len(self._cache) > 1:
                _, dropped = self._cache.popitem(last=False)
                self._cached -= dropped.nbytes
        return block

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        rows, cols = self._block_rows, self._block_cols
        for by in range(y0 // rows, (y1 - 1) // rows + 1):
            for bx in range(x0 // cols, (x1 - 1) // cols + 1):
                block = self._block(by, bx)
                oy0, ox0 = by * rows, bx * cols
                sy0, sy1 = max(y0, oy0), min(y1, oy0 + block.shape[0])
                sx0, sx1 = max(x0, ox0), min(x1, ox0 + block.shape[1])
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[sy0 - oy0 : sy1 - oy0, sx0 - ox0 : sx1 - ox0]
        return out


def halve(src: np.ndarray) -> np.ndarray:
    """2× area-average of an (h, w, 3) uint8 array, rounded; an odd last row/column is averaged with itself.

    Four strided adds in uint16 rather than a reshaped ``sum``, which numpy runs some 20× slower.
    """
    h, w = src.shape[:2]
    he, we = h - h % 2, w - w % 2
    total = np.empty(((h + 1) // 2, (w + 1) // 2, 3), np.uint16)
    inner = total[: he // 2, : we // 2]
    np.add(src[0:he:2, 0:we:2], src[1:he:2, 0:we:2], out=inner, dtype=np.uint16)
    inner += src[0:he:2, 1:we:2]
    inner += src[1:he:2, 1:we:2]
    if w % 2:  # last column: the pair of rows, each counted twice
        np.add(src[0:he:2, -1], src[1:he:2, -1], out=total[: he // 2, -1], dtype=np.uint16)
        total[: he // 2, -1] *= 2
    if h % 2:  # last row: the pair of columns, each counted twice
        np.add(src[-1, 0:we:2], src[-1, 1:we:2], out=total[-1, : we // 2], dtype=np.uint16)
        total[-1, : we // 2] *= 2
    if h % 2 and w % 2:
        total[-1, -1] = src[-1, -1].astype(np.uint16) * 4
    total += 2
    total >>= 2
    return total.astype(np.uint8)


def _aligned(size: int, chunk: int) -> int:
    """``size`` rounded to a multiple of the level pixels one parent chunk covers (chunk / 2), at least one."""
    step = chunk // 2 if chunk % 2 == 0 else chunk
    return max(step, round(size / step) * step)


def _block_shape(parent_chunks: tuple[int, ...] | None, parent_width: int, width: int) -> tuple[int, int]:
    """Rows and columns of a :class:`DownsampledLevel` block, so that blocks cover whole parent chunks.

    Over full-width strips a block is a band of the whole level width (about ``BLOCK``² pixels), so each
    strip is decoded once; over tiles it is about ``BLOCK``² aligned to them; without chunks, ``BLOCK``².
    """
    if not parent_chunks:
        return BLOCK, BLOCK
    chunk_rows, chunk_cols = int(parent_chunks[0]), int(parent_chunks[1])
    if chunk_cols >= parent_width:
        return _aligned(max(1, BLOCK * BLOCK // width), chunk_rows), width
    return _aligned(BLOCK, chunk_rows), _aligned(BLOCK, chunk_cols)


def add_overview_levels(levels: list[Any], max_side: int = 2048) -> list[Any]:
    """Append lazy 2× levels to ``levels`` until the long side of the last one is ≤ ``max_side``."""
    levels = list(levels)
    while max(levels[-1].shape[:2]) > max_side:
        levels.append(DownsampledLevel(levels[-1]))
    return levels
