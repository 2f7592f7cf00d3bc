"""Boxes a model puts on real tissue with no labelled mitosis (every one a false positive), per threshold.

Runs the model as ``midog-viewer detect`` does (tissue tiles only) on the CMU-1 SVS and the H&E tiles of
``../shared/data`` and prints the "mitotic figure" boxes at each threshold; on CMU-1 also split at the share
of its width that training may take background crops from (``CMU1_TRAINING_SHARE``).

    python scripts/unlabelled_boxes.py resources/models/real-tiny.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from midog_viewer.classes import MITOTIC_FIGURE  # noqa: E402
from midog_viewer.detect import Detector  # noqa: E402
from midog_viewer.detect.tissue import detect_tissue, tissue_filter  # noqa: E402
from midog_viewer.io import open_slide  # noqa: E402
from real_model import CMU1_TRAINING_SHARE  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
IMAGES = ("slides/CMU-1-Small-Region.svs", "tiles/tiatoolbox_target_image.png", "tiles/stardist_histo.jpg",
          "tiles/wsidicom_test_tile.png")
THRESHOLDS = (0.5, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: unlabelled_boxes.py CKPT", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    detector = Detector(sys.argv[1], device="cpu", score_thr=min(THRESHOLDS))
    totals = np.zeros(len(THRESHOLDS), int)
    print("thresholds", *THRESHOLDS)
    for name in IMAGES:
        with open_slide(DATA / name) as slide:
            tissue = detect_tissue(slide)
            found = detector.detect(slide, tile_filter=tissue_filter(tissue))
            mitotic = np.array(found.label_names()) == MITOTIC_FIGURE
            scores = found.scores[mitotic]
            counts = np.array([int((scores >= t).sum()) for t in THRESHOLDS])
            totals += counts
            print(f"{name}: {slide.width} x {slide.height} px, tissue {tissue.fraction:.2f}:", *counts)
            if "CMU-1" in name and len(scores):
                centre_x = (found.boxes[mitotic, 0] + found.boxes[mitotic, 2]) / 2
                left = centre_x < slide.width * CMU1_TRAINING_SHARE
                print("   left (may be trained on):", *[int((scores[left] >= t).sum()) for t in THRESHOLDS],
                      "  right (unseen):", *[int((scores[~left] >= t).sum()) for t in THRESHOLDS])
    print("all:", *totals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
