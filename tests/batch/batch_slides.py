"""Small slides for the cohort tests (a unique module name, so tests import it without packages)."""

from __future__ import annotations

import numpy as np

from midog_viewer.synthetic import SyntheticHPF, make_hpf, write_hpf_tiff


def write_field(path, seed, width=700, height=600):
    """A synthetic H&E field (default 700 x 600 px: 2 x 2 tiles of 512) as a TIFF."""
    write_hpf_tiff(make_hpf(seed=seed, width=width, height=height), path)
    return path


def write_glass_slide(path, width=1100, height=700, field=(400, 300), at=(50, 50), seed=3):
    """A synthetic field pasted on white glass with the scanner's faint noise (3 x 2 tiles planned)."""
    rng = np.random.default_rng(seed)
    canvas = (250 - rng.integers(0, 4, (height, width, 3))).astype(np.uint8)
    hpf = make_hpf(seed=seed, width=field[0], height=field[1])
    canvas[at[1] : at[1] + field[1], at[0] : at[0] + field[0]] = hpf.image
    write_hpf_tiff(SyntheticHPF(canvas, hpf.boxes, hpf.labels), path)
    return path
