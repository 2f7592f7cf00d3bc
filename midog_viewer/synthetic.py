"""Synthetic H&E high-power fields with ground truth: the built-in sample, test data and demo training data.

:func:`make_hpf` paints a deterministic field at 0.25 µm/px in stain space (hematoxylin and eosin
concentrations, turned into RGB by Beer–Lambert with Macenko-style stain vectors):

* eosin-pink stroma with fibre texture and a few empty (lumen/fat) spaces;
* many hematoxylin nuclei: vesicular tumour nuclei with chromatin texture, rim and nucleoli, small dark
  lymphocytes and thin fibroblasts;
* **mitotic figures** in several phases — prometaphase (dark irregular clumped chromatin), metaphase
  (a ragged dark bar), anaphase (two parallel bars), telophase (two clumps in a constricted cell) — most
  with a pale cytoplasmic halo, labelled ``"mitotic figure"``;
* **look-alike imposters** as dark as the mitoses — pyknotic nuclei (round, smooth, homogeneous),
  apoptotic bodies (smooth dark fragments in dense eosinophilic cytoplasm with a cleft) and
  hyperchromatic interphase nuclei (oval, coarse chromatin) — labelled ``"hard negative"``.

Darkness alone does not separate the classes (both span the same hematoxylin range and both sometimes
carry a halo); outline and texture do, which a small CNN can learn. Each object gets a 50×50 px box
centred on it, as in MIDOG. :func:`sample_path` writes one field as a TIFF with its MIDOG-style JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midog_viewer.classes import HARD_NEGATIVE, MIDOG_FILE_NAMES, MITOTIC_FIGURE

#: Pixel size of the synthetic fields (µm/px), that of the MIDOG Aperio/Leica scanners.
SYNTHETIC_MPP = 0.25
#: Edge of the ground-truth boxes in pixels (MIDOG: 50 px around each cell centre).
BOX_SIZE = 50
#: Optical density per unit stain concentration (Macenko-style H&E vectors, unit length).
HEMATOXYLIN = np.array([0.5626, 0.7201, 0.4062], np.float32)
EOSIN = np.array([0.2159, 0.8012, 0.5581], np.float32)

#: Part of the sample's file name: bump it whenever :func:`make_hpf` paints differently, so caches refresh.
SAMPLE_VERSION = 1
#: File-name prefix of the generated fields in :func:`cache_dir` (how a synthetic image is recognised).
SAMPLE_PREFIX = "synthetic_hpf_"

_MITOSIS_PHASES = ("prometaphase", "metaphase", "anaphase", "telophase")
_IMPOSTER_KINDS = ("pyknotic", "apoptotic", "hyperchromatic")


@dataclass
class SyntheticHPF:
    """One synthetic field: ``image`` (H, W, 3) uint8 RGB, ``boxes`` (N, 4) float32 xyxy, ``labels``, ``mpp``."""

    image: np.ndarray
    boxes: np.ndarray
    labels: list[str]
    mpp: float = SYNTHETIC_MPP


class _Canvas:
    """Stain-concentration maps being painted, plus the shared noise fields that texture them."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.height, self.width = height, width
        self.fibre_angle = float(rng.uniform(0, np.pi))
        self.fine, self.fibres_a = _noise_pair(rng, (height, width), 1.0, self.fibre_angle)
        self.grain, self.fibres_b = _noise_pair(rng, (height, width), 2.5, self.fibre_angle + rng.uniform(0.6, 1.2))
        self.hema = np.zeros((height, width), np.float32)
        self.eosin = np.zeros((height, width), np.float32)

    def window(self, cy: float, cx: float, radius: int) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """Slices of the (2r+1)² window around (cy, cx), clipped to the canvas, and its local y/x offsets."""
        y0, x0 = max(0, int(cy) - radius), max(0, int(cx) - radius)
        y1, x1 = min(self.height, int(cy) + radius + 1), min(self.width, int(cx) + radius + 1)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        return slice(y0, y1), slice(x0, x1), dy, dx

    def paint_nucleus(self, window: tuple[slice, slice, np.ndarray, np.ndarray], concentration: np.ndarray) -> None:
        ys, xs = window[:2]
        np.maximum(self.hema[ys, xs], concentration, out=self.hema[ys, xs])

    def add_eosin(self, window: tuple[slice, slice, np.ndarray, np.ndarray], delta: np.ndarray) -> None:
        ys, xs = window[:2]
        self.eosin[ys, xs] += delta


def _noise_pair(rng: np.random.Generator, shape: tuple[int, int], sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Two unit-variance textures from one white-noise spectrum: isotropic Gaussian of ``sigma`` px, and
    fibre-like noise long (σ 14 px) along ``angle`` and thin (σ 1.5 px) across it."""
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    spectrum = np.fft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    isotropic = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    along = fx * np.cos(angle) + fy * np.sin(angle)
    across = -fx * np.sin(angle) + fy * np.cos(angle)
    oriented = np.exp(-2.0 * np.pi**2 * ((14.0 * along) ** 2 + (1.5 * across) ** 2))
    return (
        _normalise(np.fft.irfft2(spectrum * isotropic, s=shape).astype(np.float32)),
        _normalise(np.fft.irfft2(spectrum * oriented, s=shape).astype(np.float32)),
    )


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by FFT (periodic edges: used on noise only, where the seam does not show)."""
    fy = np.fft.fftfreq(field.shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(field.shape[1]).astype(np.float32)[None, :]
    gain = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(field) * gain, s=field.shape).astype(np.float32)


def _normalise(field: np.ndarray) -> np.ndarray:
    return (field - field.mean()) / (field.std() + 1e-6)


def _coarse_field(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth unit-variance noise varying over ~``cell`` px, made small and upsampled bilinearly (cheap)."""
    small_h, small_w = height // cell + 3, width // cell + 3
    small = _normalise(_blur(rng.standard_normal((small_h, small_w), dtype=np.float32), 1.0))
    # Separable smoothstep interpolation (no creases at the coarse grid lines): x for the few coarse
    # rows first, then y.
    xx = np.arange(width, dtype=np.float32) / cell
    x0 = xx.astype(int)
    wx = _smoothstep(xx - x0)[None, :]
    rows = small[:, x0] * (1 - wx) + small[:, x0 + 1] * wx
    yy = np.arange(height, dtype=np.float32) / cell
    y0 = yy.astype(int)
    wy = _smoothstep(yy - y0)[:, None]
    return rows[y0] * (1 - wy) + rows[y0 + 1] * wy


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def _ellipse_radius(dy: np.ndarray, dx: np.ndarray, a: float, b: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised elliptic radius (1 on the outline) and the polar angle of each pixel."""
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return np.sqrt((u / a) ** 2 + (v / b) ** 2), np.arctan2(v, u)


def _wobble(rng: np.random.Generator, theta: np.ndarray, amount: float) -> np.ndarray:
    """A smooth irregular outline: 1 + a few random angular harmonics."""
    out = np.ones_like(theta)
    for k in (2, 3, 5):
        out += amount / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return out


def _soft_mask(radius: np.ndarray, scale: float, edge: float = 1.0) -> np.ndarray:
    """1 inside radius < 1, falling to 0 over ``edge`` pixels (``scale`` = pixels per unit radius)."""
    return np.clip((1.0 - radius) * scale / edge + 0.5, 0.0, 1.0)


# --- ordinary cells (painted in one vectorised batch) -----------------------------------------

#: Half-size of the window each ordinary nucleus is painted in (fits the longest fibroblast).
_NUCLEUS_REACH = 17


def _paint_ordinary(c: _Canvas, centres: np.ndarray, kind: np.ndarray) -> None:
    """Paint ordinary nuclei: kind 0 = vesicular tumour nucleus, 1 = lymphocyte, 2 = fibroblast.

    All nuclei share one parametric model (a wobbly ellipse with level, texture, rim and nucleolus), so
    their windows are computed as one (N, 2R+1, 2R+1) batch and only the final max-paint loops.
    """
    rng, n, reach = c.rng, len(centres), _NUCLEUS_REACH
    if n == 0:
        return
    tumour, lymph, fibro = kind == 0, kind == 1, kind == 2
    a = np.where(tumour, rng.uniform(10, 18, n), np.where(lymph, rng.uniform(5.5, 7.5, n), rng.uniform(10, 15, n)))
    b = np.where(tumour, rng.uniform(8.5, 12.5, n), np.where(lymph, a * rng.uniform(0.85, 1.0, n), rng.uniform(2.5, 4.0, n)))
    angle = np.where(fibro, c.fibre_angle + rng.normal(0, 0.2, n), rng.uniform(0, np.pi, n))
    level = np.where(tumour, rng.uniform(0.36, 0.7, n), np.where(lymph, rng.uniform(0.85, 1.15, n), rng.uniform(0.55, 0.85, n)))
    texture = np.where(tumour, 0.16, 0.1)
    rim = np.where(tumour, 0.22, 0.0)
    nucleolus = np.where(tumour & (rng.random(n) < 0.6), 0.45, 0.0)
    wobble = np.where(tumour, 0.12, 0.06)
    harmonics = rng.uniform(-1, 1, (n, 3)) * wobble[:, None] / np.array([2, 3, 5])
    phases = rng.uniform(0, 2 * np.pi, (n, 3))
    nucleolus_at = rng.uniform(-0.4, 0.4, (n, 2)) * b[:, None]
    nucleolus_sigma = rng.uniform(1.2, 2.0, n)

    iy, ix = np.round(centres[:, 0]).astype(int), np.round(centres[:, 1]).astype(int)
    offsets = np.arange(-reach, reach + 1, dtype=np.float32)
    dy = (iy - centres[:, 0]).astype(np.float32)[:, None, None] + offsets[None, :, None]
    dx = (ix - centres[:, 1]).astype(np.float32)[:, None, None] + offsets[None, None, :]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    radius = np.sqrt((u / a[:, None, None]) ** 2 + (v / b[:, None, None]) ** 2)
    # Outline wobble 1 + Σ h_k cos(kθ + φ_k), with e^{ikθ} from powers of (u + iv)/|u + iv| (no trig per pixel).
    unit = (u + 1j * v) / np.maximum(np.hypot(u, v), 1e-3)
    squared = unit * unit
    powers = {2: squared, 3: squared * unit, 5: squared * squared * unit}
    outline = 1.0 + sum(
        harmonics[:, k, None, None] * (powers[order] * np.exp(1j * phases[:, k, None, None])).real
        for k, order in enumerate((2, 3, 5))
    )
    radius = radius / outline
    mask = np.clip((1.0 - radius) * b[:, None, None] + 0.5, 0.0, 1.0)

    pad = reach + 1
    fine = np.pad(c.fine, pad, mode="reflect")
    grain = np.pad(c.grain, pad, mode="reflect")
    rows = (iy + pad)[:, None, None] + np.arange(-reach, reach + 1)[None, :, None]
    cols = (ix + pad)[:, None, None] + np.arange(-reach, reach + 1)[None, None, :]
    conc = level[:, None, None] + texture[:, None, None] * fine[rows, cols] + 0.10 * tumour[:, None, None] * grain[rows, cols]
    conc += rim[:, None, None] * np.clip((radius - 0.72) * 4, 0, 1)
    spot = (dy - nucleolus_at[:, 0, None, None]) ** 2 + (dx - nucleolus_at[:, 1, None, None]) ** 2
    conc += nucleolus[:, None, None] * np.exp(-spot / (2 * nucleolus_sigma[:, None, None] ** 2))
    painted = (mask * np.clip(conc, 0.1, None)).astype(np.float32)

    hema = np.pad(c.hema, pad)
    for k in range(n):
        ys, xs = slice(iy[k] + pad - reach, iy[k] + pad + reach + 1), slice(ix[k] + pad - reach, ix[k] + pad + reach + 1)
        np.maximum(hema[ys, xs], painted[k], out=hema[ys, xs])
    c.hema[:] = hema[pad:-pad, pad:-pad]


# --- mitotic figures --------------------------------------------------------------------------


def _cell_halo(c: _Canvas, cy: float, cx: float, radius: float, strength: float) -> None:
    """Cleared (pale) cytoplasm around a cell: both stains scaled down by up to ``strength`` in a soft disc."""
    w = c.window(cy, cx, int(radius) + 4)
    r, theta = _ellipse_radius(w[2], w[3], radius, radius * c.rng.uniform(0.8, 1.0), c.rng.uniform(0, np.pi))
    keep = 1.0 - strength * _soft_mask(r / _wobble(c.rng, theta, 0.1), radius, 3.0)
    c.eosin[w[0], w[1]] *= keep
    c.hema[w[0], w[1]] *= keep


def _ragged(c: _Canvas, w: tuple[slice, slice, np.ndarray, np.ndarray], shape_field: np.ndarray, darkness: float) -> None:
    """Chromatin from a shape field (≈1 inside): thresholded with noise, so its edge is spiky and clumped."""
    fine, grain = c.fine[w[0], w[1]], c.grain[w[0], w[1]]
    field = shape_field + 0.22 * fine + 0.12 * grain
    mask = np.clip((field - 0.4) * 3.0, 0.0, 1.0) * np.clip(shape_field * 5.0, 0.0, 1.0)
    c.paint_nucleus(w, mask * (darkness + 0.22 * fine))


def _prometaphase(c: _Canvas, cy: float, cx: float, darkness: float) -> None:
    rng = c.rng
    w = c.window(cy, cx, 18)
    field = np.zeros(w[2].shape[0:1] + w[3].shape[1:2], np.float32)
    spread = rng.uniform(4.5, 7)
    for _ in range(rng.integers(6, 12)):
        oy, ox = rng.normal(0, spread, 2)
        s = rng.uniform(2.5, 4.2)
        field += np.exp(-((w[2] - oy) ** 2 + (w[3] - ox) ** 2) / (2 * s * s))
    _ragged(c, w, np.clip(field, 0, 1.4), darkness)


def _bar(w: tuple[slice, slice, np.ndarray, np.ndarray], oy: float, ox: float, length: float, width: float, angle: float) -> np.ndarray:
    """A soft bar (≈1 inside) of ``length`` × ``width`` px centred at offset (oy, ox), along ``angle``."""
    u = (w[3] - ox) * np.cos(angle) + (w[2] - oy) * np.sin(angle)
    v = -(w[3] - ox) * np.sin(angle) + (w[2] - oy) * np.cos(angle)
    return np.exp(-((np.abs(u) / (length / 2)) ** 4 + (v / (width / 2)) ** 2) * 0.7)


def _metaphase(c: _Canvas, cy: float, cx: float, darkness: float) -> None:
    rng = c.rng
    w = c.window(cy, cx, 20)
    _ragged(c, w, _bar(w, 0, 0, rng.uniform(22, 32), rng.uniform(6, 9), rng.uniform(0, np.pi)), darkness)


def _anaphase(c: _Canvas, cy: float, cx: float, darkness: float) -> None:
    rng = c.rng
    w = c.window(cy, cx, 22)
    angle, gap, length = rng.uniform(0, np.pi), rng.uniform(5, 9), rng.uniform(18, 26)
    oy, ox = gap * np.cos(angle), -gap * np.sin(angle)  # offset across the bars' long axis
    width = rng.uniform(4.5, 6.5)
    field = np.maximum(_bar(w, oy, ox, length, width, angle), _bar(w, -oy, -ox, length, width, angle))
    _ragged(c, w, field, darkness)


def _telophase(c: _Canvas, cy: float, cx: float, darkness: float) -> None:
    rng = c.rng
    w = c.window(cy, cx, 22)
    angle, gap = rng.uniform(0, np.pi), rng.uniform(9, 13)
    oy, ox = gap * np.sin(angle), gap * np.cos(angle)
    field = np.zeros(w[2].shape[0:1] + w[3].shape[1:2], np.float32)
    for sign in (1, -1):
        field = np.maximum(field, _bar(w, sign * oy, sign * ox, rng.uniform(9, 13), rng.uniform(6, 8), angle + np.pi / 2))
    _ragged(c, w, field, darkness)


# --- imposters --------------------------------------------------------------------------------


def _pyknotic(c: _Canvas, cy: float, cx: float, darkness: float) -> None:
    rng = c.rng
    r = rng.uniform(7, 10.5)
    w = c.window(cy, cx, 14)
    radius, theta = _ellipse_radius(w[2], w[3], r, r * rng.uniform(0.85, 1.0), rng.uniform(0, np.pi))
    mask = _soft_mask(radius / _wobble(rng, theta, 0.04), r, 0.8)
    c.paint_nucleus(w, mask * (darkness + 0.05 * c.fine[w[0], w[1]]))


def _apoptotic(c: _Canvas, cy: float, cx: float, darkness: float) -> None:
    rng = c.rng
    cell = rng.uniform(11, 15)
    w = c.window(cy, cx, 20)
    radius, theta = _ellipse_radius(w[2], w[3], cell, cell * rng.uniform(0.75, 0.95), rng.uniform(0, np.pi))
    body = _soft_mask(radius / _wobble(rng, theta, 0.08), cell, 1.5)
    cleft = np.clip(1.0 - np.abs(radius - 1.25) * 4, 0, 1)  # a thin retraction space around the shrunken cell
    c.add_eosin(w, 0.25 * body - 0.15 * cleft)
    fragments = np.zeros_like(body)
    for _ in range(rng.integers(1, 5)):
        fr = rng.uniform(3.0, 6.0)
        oy, ox = rng.uniform(-0.45, 0.45, 2) * cell
        fragments = np.maximum(fragments, _soft_mask(np.sqrt((w[2] - oy) ** 2 + (w[3] - ox) ** 2) / fr, fr, 0.8))
    c.paint_nucleus(w, fragments * (darkness + 0.05 * c.fine[w[0], w[1]]))


def _hyperchromatic(c: _Canvas, cy: float, cx: float, darkness: float) -> None:
    rng = c.rng
    a, b = rng.uniform(11, 15), rng.uniform(8.5, 11)
    w = c.window(cy, cx, 18)
    radius, theta = _ellipse_radius(w[2], w[3], a, b, rng.uniform(0, np.pi))
    mask = _soft_mask(radius / _wobble(rng, theta, 0.06), b)
    conc = darkness - 0.1 + 0.2 * c.grain[w[0], w[1]] + 0.1 * c.fine[w[0], w[1]]
    c.paint_nucleus(w, mask * conc)


_PAINT_MITOSIS: dict[str, Callable[[_Canvas, float, float, float], None]] = {
    "prometaphase": _prometaphase,
    "metaphase": _metaphase,
    "anaphase": _anaphase,
    "telophase": _telophase,
}
_PAINT_IMPOSTER: dict[str, Callable[[_Canvas, float, float, float], None]] = {
    "pyknotic": _pyknotic,
    "apoptotic": _apoptotic,
    "hyperchromatic": _hyperchromatic,
}


# --- layout -----------------------------------------------------------------------------------


def _jittered_grid(rng: np.random.Generator, height: int, width: int, spacing: float) -> np.ndarray:
    """Cell centres (N, 2) as (y, x) inside the field: a grid of ``spacing`` px with ±35 % jitter."""
    ys, xs = np.meshgrid(np.arange(spacing / 2, height, spacing), np.arange(spacing / 2, width, spacing), indexing="ij")
    points = np.stack([ys.ravel(), xs.ravel()], axis=1)
    points = points + rng.uniform(-0.35, 0.35, points.shape) * spacing
    return np.clip(points, 0, [height - 1, width - 1])


def _pick_special(rng: np.random.Generator, candidates: np.ndarray, count: int, min_gap: float) -> np.ndarray:
    """Indices of up to ``count`` candidates at least ``min_gap`` px apart, in random order."""
    chosen: list[int] = []
    for index in rng.permutation(len(candidates)):
        if len(chosen) == count:
            break
        if all(np.hypot(*(candidates[index] - candidates[j])) >= min_gap for j in chosen):
            chosen.append(int(index))
    return np.array(chosen, dtype=int)


def make_hpf(seed: int = 0, width: int = 2048, height: int = 1536) -> SyntheticHPF:
    """Paint one deterministic H&E-like high-power field with mitotic figures and imposters (see module doc)."""
    if width < 2 * BOX_SIZE or height < 2 * BOX_SIZE:
        raise ValueError(f"a synthetic field needs at least {2 * BOX_SIZE}×{2 * BOX_SIZE} px, not {width}×{height}")
    rng = np.random.default_rng(seed)
    canvas = _Canvas(rng, height, width)

    # Tumour nests (purple-pink cytoplasm, crowded nuclei) in fibrous pink stroma with a few empty spaces.
    tissue = _coarse_field(rng, height, width, 160)
    nest = np.clip((_coarse_field(rng, height, width, 200) + 0.25) * 1.5, 0, 1)
    blend = np.clip(_coarse_field(rng, height, width, 300) * 0.8 + 0.5, 0, 1)
    fibres = blend * canvas.fibres_a + (1 - blend) * canvas.fibres_b
    space = np.clip((tissue + 1.8) * 6.0, 0, 1)  # ~3 % of the field is empty (lumen, fat)
    stroma = 0.26 + 0.04 * tissue + 0.05 * fibres
    cytoplasm = 0.2 + 0.03 * canvas.grain
    canvas.eosin[:] = space * np.clip(nest * cytoplasm + (1 - nest) * stroma, 0.05, None)
    canvas.hema[:] = space * np.clip(0.03 + 0.06 * nest + 0.015 * canvas.grain, 0, None)

    # Cells on a jittered grid: crowded tumour nuclei in nests, sparse fibroblasts/lymphocytes in stroma.
    centres = _jittered_grid(rng, height, width, 36.0)
    iy, ix = centres[:, 0].astype(int).clip(0, height - 1), centres[:, 1].astype(int).clip(0, width - 1)
    in_nest = nest[iy, ix] > 0.5
    keep = (space[iy, ix] > 0.9) & (rng.random(len(centres)) < np.where(in_nest, 0.88, 0.22))
    centres, in_nest = centres[keep], in_nest[keep]

    # Special cells: mostly in nests, all far enough from the border for a whole box.
    margin = BOX_SIZE / 2 + 4
    inside = (
        (centres[:, 0] > margin) & (centres[:, 0] < height - margin) & (centres[:, 1] > margin) & (centres[:, 1] < width - margin)
    )
    candidates = np.flatnonzero(inside & (in_nest | (rng.random(len(centres)) < 0.15)))
    area = width * height / (2048 * 1536)
    n_mitoses = int(rng.poisson(7 * area)) + 2
    n_imposters = int(rng.poisson(10 * area)) + 2
    special = candidates[_pick_special(rng, centres[candidates], n_mitoses + n_imposters, 70.0)]
    kinds = [MITOTIC_FIGURE] * min(n_mitoses, len(special)) + [HARD_NEGATIVE] * max(0, len(special) - n_mitoses)

    # Ordinary cells, none within reach of a special one (so each box holds just its object).
    ordinary = np.setdiff1d(np.arange(len(centres)), special)
    if len(special):
        offsets = centres[ordinary, None, :] - centres[special][None, :, :]
        ordinary = ordinary[np.hypot(offsets[..., 0], offsets[..., 1]).min(axis=1) > 30.0]
    roll = rng.random(len(ordinary))
    kind = np.where(in_nest[ordinary], np.where(roll < 0.06, 1, 0), np.where(roll < 0.3, 1, 2))
    _paint_ordinary(canvas, centres[ordinary], kind)

    boxes, labels = [], []
    for index, label in zip(special, kinds):
        cy, cx = centres[index] + rng.uniform(-3, 3, 2)
        darkness = rng.uniform(1.05, 1.6)  # the same range for both classes
        if label == MITOTIC_FIGURE:
            if rng.random() < 0.75:
                _cell_halo(canvas, cy, cx, rng.uniform(17, 22), rng.uniform(0.3, 0.6))
            _PAINT_MITOSIS[_MITOSIS_PHASES[rng.integers(len(_MITOSIS_PHASES))]](canvas, cy, cx, darkness)
        else:
            imposter = _IMPOSTER_KINDS[rng.integers(len(_IMPOSTER_KINDS))]
            if imposter != "apoptotic" and rng.random() < 0.35:
                _cell_halo(canvas, cy, cx, rng.uniform(14, 20), rng.uniform(0.3, 0.6))
            _PAINT_IMPOSTER[imposter](canvas, cy, cx, darkness)
        half = BOX_SIZE / 2
        boxes.append([cx - half, cy - half, cx + half, cy + half])
        labels.append(label)

    image = _to_rgb(rng, _soften(canvas.hema), _soften(np.clip(canvas.eosin, 0, None)))
    return SyntheticHPF(image, np.array(boxes, np.float32).reshape(-1, 4), labels, SYNTHETIC_MPP)


def _soften(field: np.ndarray) -> np.ndarray:
    """The optics' slight blur: a separable [1, 2, 1]/4 kernel (≈ Gaussian σ 0.7 px), edges kept."""
    out = field.copy()
    out[1:-1] = 0.5 * field[1:-1] + 0.25 * (field[:-2] + field[2:])
    rows = out.copy()
    out[:, 1:-1] = 0.5 * rows[:, 1:-1] + 0.25 * (rows[:, :-2] + rows[:, 2:])
    return out


def _to_rgb(rng: np.random.Generator, hema: np.ndarray, eosin: np.ndarray) -> np.ndarray:
    """Beer–Lambert: transmitted light = 255 · 10^-(OD of both stains + a faint background), plus sensor noise."""
    ln10 = np.float32(np.log(10.0))
    od = hema[:, :, None] * (-ln10 * HEMATOXYLIN) + eosin[:, :, None] * (-ln10 * EOSIN)
    od += -ln10 * np.float32(0.03)
    light = np.exp(od, out=od)
    light *= np.float32(255.0)
    light += rng.integers(-3, 4, light.shape, dtype=np.int8)  # ±3 grey levels of sensor noise
    return np.clip(light, 0, 255, out=light).astype(np.uint8)


# --- the built-in sample ----------------------------------------------------------------------


def cache_dir() -> Path:
    """Where midog-viewer keeps generated files: ``$MIDOG_VIEWER_CACHE`` or ``~/.cache/midog-viewer``."""
    return Path(os.environ.get("MIDOG_VIEWER_CACHE") or Path.home() / ".cache" / "midog-viewer").expanduser()


def midog_json(hpf: SyntheticHPF, file_name: str) -> dict:
    """Ground truth of ``hpf`` in the MIDOG 2021 JSON layout (COCO-like, bbox = [x1, y1, x2, y2])."""
    category = {MITOTIC_FIGURE: 1, HARD_NEGATIVE: 2}
    height, width = hpf.image.shape[:2]
    return {
        "info": {"description": "midog-viewer synthetic H&E high-power field", "mpp": hpf.mpp},
        "images": [{"file_name": file_name, "id": 1, "width": width, "height": height, "mpp": hpf.mpp}],
        "categories": [{"id": i, "name": MIDOG_FILE_NAMES[label]} for label, i in category.items()],
        "annotations": [
            {"bbox": [round(float(v), 2) for v in box], "category_id": category[label], "image_id": 1, "id": i + 1}
            for i, (box, label) in enumerate(zip(hpf.boxes, hpf.labels))
        ],
    }


def write_hpf_tiff(hpf: SyntheticHPF, path: Path) -> None:
    """Write ``hpf`` as an RGB TIFF with its pixel size in the resolution tags (pixels per cm)."""
    import tifffile

    per_cm = 1e4 / hpf.mpp
    tifffile.imwrite(
        path,
        hpf.image,
        photometric="rgb",
        compression="zlib",
        compressionargs={"level": 1},  # written once per cache; fast beats 10 % smaller
        rowsperstrip=64,
        resolution=(per_cm, per_cm),
        resolutionunit="CENTIMETER",
    )


def sample_path() -> Path:
    """The built-in sample (seed 0, 2048×1536) as a TIFF with ground truth beside it, written once."""
    folder = cache_dir()
    image_path = folder / f"{SAMPLE_PREFIX}v{SAMPLE_VERSION}_seed0.tiff"
    json_path = image_path.with_suffix(".json")
    if image_path.is_file() and json_path.is_file():
        return image_path
    folder.mkdir(parents=True, exist_ok=True)
    hpf = make_hpf(seed=0)
    # Write beside the target and rename, so a concurrent reader never sees half a file.
    partial = folder / f".{image_path.name}.{os.getpid()}.part"
    write_hpf_tiff(hpf, partial)
    os.replace(partial, image_path)
    partial_json = folder / f".{json_path.name}.{os.getpid()}.part"
    partial_json.write_text(json.dumps(midog_json(hpf, image_path.name), indent=1))
    os.replace(partial_json, json_path)
    return image_path
