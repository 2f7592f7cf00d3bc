"""Helpers of the reviewed-subtype tests: synthetic slides and a review store holding every kind of subtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.review.store import ReviewStore
from midog_viewer.synthetic import make_hpf, write_hpf_tiff

#: Per slide, the figures :func:`build_store` gives a human's subtype (kind tag, atypical); nothing else counts.
LABELLED = [("d0", 1), ("d4", 0), ("imported0", 1), ("imported1", 0), ("hand0", 0)]


def write_slides(folder: Path, n: int = 3, size: int = 256) -> list[Path]:
    """``n`` synthetic fields (0.25 µm/px) as TIFF files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(n):
        path = folder / f"slide{seed}.tiff"
        write_hpf_tiff(make_hpf(seed=seed, width=size, height=size), path)
        paths.append(path)
    return paths


def _box(k: int) -> list[float]:
    cx, cy = 30 + 28 * (k % 7), 40 + 60 * (k // 7)
    return [cx - 12, cy - 12, cx + 12, cy + 12]


def build_store(db: Path, slides: list[Path]) -> dict[tuple[str, str], tuple[str, int]]:
    """A store over ``slides`` where each slide holds, besides the :data:`LABELLED` figures, one of each thing
    that must not train: a pending detection, a rejected one with a subtype, an accepted one with only the
    model's call, an imported figure without a flag, an imported non-mitosis with a flag, a hand-added figure
    without a subtype, and a deleted one with a subtype. Returns (slide name, tag) -> (kind, id)."""
    ids: dict[tuple[str, str], tuple[str, int]] = {}
    with ReviewStore(db, reviewer="tester") as store:
        for path in slides:
            slide = store.add_slide(path, mpp=0.25, width=256, height=256)
            run = store.add_detection_run(slide, "model", {}, atypical_threshold=0.5)
            det = store.add_detections(run, np.array([_box(k) for k in range(5)]), np.full(5, 0.9),
                                       [MITOTIC_FIGURE] * 5, p_atypical=[0.1, 0.9, 0.9, 0.2, 0.8])
            store.decide(int(det[0]), "accept")
            store.decide_subtype("detection", int(det[0]), True)  # the model said normal: overridden
            # det[1] stays pending (the model says atypical)
            store.decide(int(det[2]), "reject")
            store.decide_subtype("detection", int(det[2]), True)
            store.decide(int(det[3]), "accept")  # its subtype is only the model's call
            store.decide(int(det[4]), "accept")
            store.decide_subtype("detection", int(det[4]), False)  # the model said atypical: overridden
            imported = store.add_annotations(slide, np.array([_box(k) for k in range(5, 9)]),
                                             [MITOTIC_FIGURE] * 3 + ["hard negative"], "gt.json",
                                             atypical=[1, 0, None, 1])
            hand = [store.add_annotation(slide, _box(k), MITOTIC_FIGURE) for k in range(9, 12)]
            store.decide_subtype("annotation", hand[0], False)
            store.decide_subtype("annotation", hand[2], True)
            store.delete_annotation(hand[2])
            for tag, (kind, oid) in {"d0": ("detection", det[0]), "d4": ("detection", det[4]),
                                     "imported0": ("annotation", imported[0]),
                                     "imported1": ("annotation", imported[1]),
                                     "hand0": ("annotation", hand[0])}.items():
                ids[(path.name, tag)] = (kind, int(oid))
    return ids
