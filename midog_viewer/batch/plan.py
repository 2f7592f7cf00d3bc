"""What a cohort run does: the slides under the given paths, each slide's tile plan, and the work units.

A slide's plan (made once, on a worker, and kept in the ledger so a resume uses the same one) is its tissue
mask's verdict on the planned tiles, each tile's core (the part of the slide it owns), the resampling zoom
and the stain map fitted on its tissue tiles. A work unit is a batch of :data:`TILES_PER_TASK` tiles, so a
large slide spreads over every worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from midog_viewer.errors import MidogError

#: Tiles per work unit: enough to keep a worker's model busy, few enough to spread a slide and to lose
#: little when a worker dies.
TILES_PER_TASK = 8
#: File endings taken as slides when a folder is given (other files, e.g. a review database, are skipped).
SLIDE_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".dcm", ".scn", ".bif", ".vms")


def _is_dicom_folder(path: Path) -> bool:
    try:
        return any(child.suffix.lower() == ".dcm" for child in path.iterdir())
    except OSError:
        return False


def find_slides(paths: Iterable[str | Path]) -> list[Path]:
    """The slides named or held (one level deep; a folder of .dcm files is one DICOM slide) by ``paths``.

    A path that does not exist, or a folder without slides, is bad input (MidogError); files named
    directly are kept whatever their ending, so an unreadable one fails alone in the run.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise MidogError(f"{path} does not exist.")
        if path.is_dir() and not _is_dicom_folder(path):
            try:
                children = sorted(path.iterdir())
            except OSError as exc:
                raise MidogError(f"{path} cannot be read: {exc.strerror or exc}.") from exc
            slides = [c for c in children if (c.is_file() and c.suffix.lower() in SLIDE_SUFFIXES)
                      or (c.is_dir() and _is_dicom_folder(c))]
            if not slides:
                raise MidogError(f"{path} holds no slides ({', '.join(SLIDE_SUFFIXES)} or DICOM folders).")
            found += slides
        else:
            found.append(path)
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)


def plan_slide(detector: Any, slide: Any) -> dict[str, Any]:
    """The plan of one opened slide (JSON types): tissue-filtered tiles, their cores, zoom, stain map, sizes."""
    from midog_viewer.detect.tissue import detect_tissue, tissue_filter

    tissue = detect_tissue(slide)
    tiles, cores, zoom = detector.plan(slide, None, tissue_filter(tissue))
    planned = len(detector.plan(slide)[0])
    od_matrix = detector.stain_matrix(slide, tiles)
    box = tissue.bounding_box()
    return {
        "width": int(slide.width), "height": int(slide.height), "mpp": slide.mpp,
        "tiles": [list(map(int, t)) for t in tiles], "cores": [list(map(float, c)) for c in cores],
        "planned_tiles": planned, "zoom": float(zoom), "tissue_fraction": round(tissue.fraction, 6),
        "tissue_box": list(box) if box else None,
        "od_matrix": None if od_matrix is None else od_matrix.tolist(),
        "score_thr": float(detector.score_thr), "stain_normalize": bool(detector.stain_normalize),
        "model": str(detector.info.path),
    }


def work_units(pending: list[int], size: int = TILES_PER_TASK) -> list[list[int]]:
    """The pending tile indices cut into batches of ``size`` (in plan order, so a batch is a strip of tiles)."""
    ordered = sorted(pending)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]
