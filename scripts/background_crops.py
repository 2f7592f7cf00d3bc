"""Background crops (no objects) of ordinary real tissue for training the real-tissue detector.

Cuts the left ``--share`` of a slide (default: 60 % of CMU-1-Small-Region.svs, skin at 20x) into tissue crops
of 64 µm, resampled to 0.25 µm/px the way the detector resamples a slide, and writes a ``--points`` data
set: ``images.csv`` and ``objects.csv`` of ``real_mitosis/`` with the crops appended as images without objects
(background), plus links to real_mitosis's folders. The rest of the slide stays unseen, for
``benchmarks/real_model.py``'s count of boxes on ordinary tissue.

    python scripts/background_crops.py ../shared/data/real_mitosis ../shared/data/slides/CMU-1-Small-Region.svs OUT \
        --spacing "TUPAC16 candidates=0.4"

``--spacing SOURCE=MPP`` replaces the pixel spacing ``images.csv`` states for one source (see the model card
``real-tiny.md`` for why the TUPAC16 candidate crops are read at 0.4 µm/px).
    midog-viewer train --points OUT/objects.csv --image-table OUT/images.csv --images OUT ...
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from midog_viewer.detect.engine import resample_tile  # noqa: E402
from midog_viewer.io import open_slide  # noqa: E402
from real_model import CMU1_TRAINING_SHARE  # noqa: E402  (the benchmark measures the rest of the slide)

#: Pixel spacing the crops are written at (the real-tissue model's).
TARGET_MPP = 0.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("real_mitosis", type=Path)
    parser.add_argument("slide", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--share", type=float, default=CMU1_TRAINING_SHARE,
                        help="left share of the slide's width to cut (default: the share the benchmark leaves out)")
    parser.add_argument("--min-tissue", type=float, default=0.5, help="share of a crop that must be tissue")
    parser.add_argument("--spacing", action="append", default=[], metavar="SOURCE=MPP",
                        help="read this source's images at MPP µm/px instead of the stated spacing (repeatable)")
    args = parser.parse_args()
    try:
        spacing = {name: float(value) for name, value in (item.rsplit("=", 1) for item in args.spacing)}
    except ValueError:
        print(f"--spacing wants SOURCE=MPP, got {args.spacing}", file=sys.stderr)
        return 2
    with open(args.real_mitosis / "images.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    unknown = set(spacing) - {row["source"] for row in table}
    if unknown:
        print(f"--spacing names no source of images.csv: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    for row in table:
        row["mpp"] = str(spacing.get(row["source"], row["mpp"]))
    crops = args.out / "background"
    crops.mkdir(parents=True, exist_ok=True)
    for folder in (p for p in args.real_mitosis.iterdir() if p.is_dir()):
        link = args.out / folder.name
        if not link.exists():
            link.symlink_to(folder.resolve())
    rows = []
    with open_slide(args.slide) as slide:
        if not slide.mpp:
            print(f"{args.slide} has no pixel size", file=sys.stderr)
            return 2
        native = int(round(32 / slide.mpp)) * 2  # 64 µm in slide pixels (128 px at 0.5 µm/px)
        limit_x = int(slide.width * args.share)
        for offset in (0, native // 4, native // 2, 3 * native // 4):  # overlapping grids: more positions
            for y in range(offset, slide.height - native + 1, native):
                for x in range(offset, limit_x - native + 1, native):
                    pixels = slide.read_region(x, y, native, native)[..., :3]
                    if (pixels.astype(int).min(axis=2) < 200).mean() < args.min_tissue:
                        continue
                    tile = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float()
                    resized, _ = resample_tile(tile, slide.mpp / TARGET_MPP)
                    image = resized.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
                    name = f"background/{args.slide.stem}_{x}_{y}.png"
                    Image.fromarray(image).save(args.out / name)
                    rows.append([name, f"{args.slide.stem} background", args.slide.name, TARGET_MPP,
                                 image.shape[1], image.shape[0], "as the slide"])
    with open(args.out / "images.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(table[0]))
        writer.writerows([list(row.values()) for row in table] + rows)
    (args.out / "objects.csv").write_text((args.real_mitosis / "objects.csv").read_text(encoding="utf-8"),
                                          encoding="utf-8")
    print(f"{len(rows)} background crops of {args.slide.name} in {crops}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
