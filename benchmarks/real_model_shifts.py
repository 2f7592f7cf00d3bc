"""How the real-tissue detector holds up when its validation mosaics look as if another lab had made them.

Each shift is applied to whole 512 px mosaics of the by-slide validation crops (as ``benchmarks/real_model.py``
builds them): a slide from another lab differs as a whole. Prints, at the model's operating point (or
``--score-thr``), for the unshifted mosaics (the baseline, same run) and for each shift: the AMi-Br mosaic
recall (the crop target's form), other detections per crop, the TUPAC16-candidate recall, the labelled
look-alikes boxed, and each row's recall as a ratio of the baseline's. The shifts:

* stains: haematoxylin ×0.7 / ×1.4, eosin ×0.5 / ×1.6 (optical densities, as the HED jitter moves them);
* colour: every LAB channel given the mean statistics of MITOS-ATYPIA-14's or AtNorM-MD's training crops
  (Reinhard), lighter or darker (gamma 0.7 / 1.4), saturation ×0.6 / ×1.5;
* a scanner out of focus (Gaussian blur, sigma 1.2 px) and JPEG at quality 40;
* a pixel spacing read 15 % off either way: the mosaic resized to 0.85 / 1.15 of its side while its
  recorded spacing stays, so every nucleus looks that much smaller or larger.

    python benchmarks/real_model_shifts.py [--model CKPT] [--score-thr T] [--json OUT.json]

Validation figures of our own split (a probe of robustness), not test figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_model import DATA, MOSAIC_SIDE, REPO, SPACING_CORRECTIONS, lookalikes_boxed, mosaics, validation_split  # noqa: E402

sys.path.insert(0, str(REPO))
AMI_BR = ("AMi-Br/MIDOG21", "AMi-Br/TUPAC16")
CANDIDATES = "TUPAC16 candidates"


def shifts(train_images) -> dict:
    """Name → a function of a float RGB (3, H, W) 0..255 tensor, or a factor to resize by."""
    from torchvision.transforms.v2 import functional as F

    from midog_viewer.train.colour import lab_recolour, lab_spread
    from midog_viewer.train.recipe import scale_stains

    def like(source: str):
        spread = lab_spread(im.pixels for im in train_images if im.source.startswith(source) and im.pixels is not None)
        return lambda x: lab_recolour(x, spread.mean_of_means, spread.mean_of_stds)

    def stains(h: float = 1.0, e: float = 1.0):
        return lambda x: scale_stains(x, torch.tensor([h, e, 1.0]), torch.zeros(3))

    def jpeg(x: torch.Tensor) -> torch.Tensor:
        return F.jpeg(x.round().clamp(0, 255).byte(), 40).float()

    return {
        "none": lambda x: x,
        "haematoxylin x0.7": stains(h=0.7), "haematoxylin x1.4": stains(h=1.4),
        "eosin x0.5": stains(e=0.5), "eosin x1.6": stains(e=1.6),
        "colours of MITOS-ATYPIA-14": like("MITOS-ATYPIA-14"), "colours of AtNorM-MD": like("AtNorM"),
        "lighter (gamma 0.7)": lambda x: 255 * (x / 255) ** 0.7, "darker (gamma 1.4)": lambda x: 255 * (x / 255) ** 1.4,
        "saturation x0.6": lambda x: F.adjust_saturation(x / 255, 0.6) * 255,
        "saturation x1.5": lambda x: (F.adjust_saturation(x / 255, 1.5) * 255).clamp(0, 255),
        "blur sigma 1.2 px": lambda x: F.gaussian_blur(x, [7, 7], [1.2, 1.2]),
        "JPEG quality 40": jpeg,
        "objects x0.85 (spacing off)": 0.85, "objects x1.15 (spacing off)": 1.15,
    }


def moved(mosaic, shift):
    """The mosaic with ``shift`` applied: a colour function, or a factor its pixels and boxes are resized by."""
    from torchvision.transforms.v2 import functional as F

    pixels = torch.from_numpy(mosaic.pixels).permute(2, 0, 1).float()
    if isinstance(shift, float):
        height, width = round(mosaic.height * shift), round(mosaic.width * shift)
        pixels = F.resize(pixels, [height, width], antialias=True)
        return dataclasses.replace(mosaic, pixels=pixels.round().clamp(0, 255).byte().permute(1, 2, 0).numpy(),
                                   boxes=mosaic.boxes * shift, width=width, height=height)
    return dataclasses.replace(mosaic, pixels=shift(pixels).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: the shipped real-tissue model)")
    parser.add_argument("--data", default=str(DATA), help="the real_mitosis folder")
    parser.add_argument("--score-thr", type=float, help="default: the model's operating point")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from midog_viewer.detect.engine import Detector
    from midog_viewer.detect.models import REAL_MODEL
    from midog_viewer.train.validate import midog_scores, predict_images

    data = Path(args.data)
    if not data.is_dir():
        print(f"real_mitosis not found at {data}", file=sys.stderr)
        return 2
    split = validation_split(data, SPACING_CORRECTIONS)
    model_path = Path(args.model) if args.model else REAL_MODEL.path
    detector = Detector(model_path, device="cpu", score_thr=0.05)
    threshold = float(detector.info.config.score_threshold if args.score_thr is None else args.score_thr)

    groups = {}  # source -> (mosaics, crops)
    for source in (*AMI_BR, CANDIDATES):
        crops = [im for im in split.val if im.source == source and im.pixels is not None]
        side = max(im.width for im in crops)
        np.random.default_rng(0).shuffle(crops)
        built = [m for mpp in sorted({im.mpp for im in crops})
                 for m, _ in mosaics([im for im in crops if im.mpp == mpp], size=MOSAIC_SIDE // side, side=side)]
        groups[source] = (built, len(crops))

    rows = []
    for name, shift in shifts(split.train).items():
        scores, boxed = {}, (0, 0)
        for source, (built, _) in groups.items():
            shifted = [moved(m, shift) for m in built]
            found = predict_images(detector.model, shifted, "cpu", stain_normalise=detector.stain_normalize)
            scores[source] = midog_scores(shifted, found, threshold)
            if source == CANDIDATES:
                boxed = lookalikes_boxed(shifted, found, threshold)
        tp, fn, fp = (sum(scores[s][k] for s in AMI_BR) for k in ("tp", "fn", "fp"))
        cand = scores[CANDIDATES]
        rows.append({"shift": name, "ami_br_recall": tp / max(tp + fn, 1),
                     "other_detections_per_crop": fp / sum(groups[s][1] for s in AMI_BR),
                     "candidate_recall": cand["tp"] / max(cand["tp"] + cand["fn"], 1),
                     "lookalikes_boxed": boxed[0], "lookalikes": boxed[1]})
        row = rows[-1]
        row["recall_ratio"] = row["ami_br_recall"] / max(rows[0]["ami_br_recall"], 1e-9)
        if len(rows) == 1:
            print(f"model {model_path.name} at score >= {threshold:.2f}")
            print(f"{'shift':28s} {'AMi-Br recall':>13s} {'ratio':>6s} {'other/crop':>10s} "
                  f"{'candidate recall':>16s} {'look-alikes boxed':>17s}")
        print(f"{name:28s} {row['ami_br_recall']:13.3f} {row['recall_ratio']:6.2f} "
              f"{row['other_detections_per_crop']:10.3f} {row['candidate_recall']:16.3f} "
              f"{row['lookalikes_boxed']:>9d} of {row['lookalikes']:<4d}", flush=True)
    moved_rows = rows[1:]
    worst = min(moved_rows, key=lambda r: r["ami_br_recall"])
    mean = float(np.mean([r["ami_br_recall"] for r in moved_rows]))
    print(f"over the {len(moved_rows)} shifts: mean AMi-Br recall {mean:.3f} (ratio {mean / rows[0]['ami_br_recall']:.2f}), "
          f"worst {worst['ami_br_recall']:.3f} ({worst['shift']}); look-alikes boxed at most "
          f"{max(r['lookalikes_boxed'] for r in moved_rows)} of {rows[0]['lookalikes']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(model_path), "score_threshold": threshold, "rows": rows},
                                              indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
