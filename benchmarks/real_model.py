"""Validation figures of the real-tissue detector on its own by-slide validation split of ``real_mitosis/``.

Builds the split exactly as ``midog-viewer train --points`` does (same data, fraction and seed), runs the
model through the product's detector on every validation crop, and prints, at the model's operating point
(or ``--score-thr``):

* per source: recall, precision and F1 of the crops, false positives per mm² of crop tissue, false
  positives per crop, and the F1 those imply on a field with 5.7 mitoses/mm² (MIDOG 2021's density);
* the crops placed 4 × 4 into 512 px mosaics, as the held-out crop target is scored: recall, and other
  "mitotic figure" detections per crop; the smaller crops of the other sources likewise, as many as fill
  512 px (10 × 10 of MITOS-ATYPIA-14's 50 px, 6 × 6 of the TUPAC16 candidates' 80 px), with the share of
  labelled look-alikes (hard negatives) that got a box;
* the same mosaics shifted off their grid (right and down by a seeded 1-``OFF_GRID_MAX_PX`` px): on a field a
  figure sits anywhere, while a mosaic holds every one at 64 + 128 k px, one phase of the network's stride grid;
* detections per mm² of tissue on the right 40 % of the real CMU-1 SVS (skin, no mitosis labelled: an upper bound of the false
  positive rate on ordinary real tissue outside the training data), run as ``midog-viewer detect`` runs;
* a threshold sweep: mosaic recall, each small-crop source's recall, the share of look-alikes boxed, CMU-1
  detections/mm², the field F1 mosaic recall and CMU-1 imply, and that F1 on a field that also holds
  ``LOOKALIKES_PER_MM2`` look-alikes boxed at the measured share, from the aligned and from the off-grid
  mosaics (the off-grid one is how the model card chooses the threshold);
* CPU seconds per 512 px tile against a baseline from the same run (reading + stain normalisation only);
* for a model with a second look (``midog_viewer.detect.second_look``), the off-grid 128 px mosaic recall and
  the CPU time per tile with one look only, from the same run.

    python benchmarks/real_model.py [--model CKPT] [--json OUT.json] [--stated-spacing]

The TUPAC16 candidate crops are read at 0.4 µm/px, not the 0.25 ``images.csv`` states, as the real-tissue
model was trained (``SPACING_CORRECTIONS``; the card ``real-tiny.md`` says why); ``--stated-spacing`` reads
every image at its stated spacing.

These are validation figures (the threshold was chosen on the same split), not test figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "real_mitosis"
#: Share of CMU-1's width, from the left, that training may take background crops from; the rest is measured.
CMU1_TRAINING_SHARE = 0.6
#: Sources whose stated pixel spacing does not fit their pixels: their nuclei measure as at this µm/px.
SPACING_CORRECTIONS = {"TUPAC16 candidates": 0.4}
#: Look-alikes (dark non-mitotic nuclei) per mm² of a field with 5.7 mitoses/mm²: the 2.7 per mitosis that the
#: detector which proposed the TUPAC16 candidates found.
LOOKALIKES_PER_MM2 = 15.0
#: Side of the mosaics every source's validation crops are placed into.
MOSAIC_SIDE = 512
#: Largest shift (px) of the off-grid mosaics: figures then fall at other phases of the stride grid (P2-P5: 4-32 px).
OFF_GRID_MAX_PX = 31


def off_grid(images, seed: int = 0):
    """Each mosaic shifted right and down by a seeded random 1..OFF_GRID_MAX_PX px within its own size (white
    fill; what leaves the right and bottom edge is cut, with the objects whose centre left), boxes with it.

    The size stays, so the detector's tiles start where they did: a larger image would be tiled again from
    its far edge, which puts part of it back on the grid.
    """
    import dataclasses

    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        dx, dy = (int(v) for v in rng.integers(1, OFF_GRID_MAX_PX + 1, 2))
        height, width = image.pixels.shape[:2]
        pixels = np.full_like(image.pixels, 255)
        pixels[dy:, dx:] = image.pixels[: height - dy, : width - dx]
        boxes = image.boxes + np.array([dx, dy, dx, dy], np.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = (centres[:, 0] < width) & (centres[:, 1] < height)
        boxes[:, 2:] = np.minimum(boxes[:, 2:], [width, height])
        out.append(dataclasses.replace(image, pixels=pixels, boxes=boxes[keep], labels=image.labels[keep]))
    return out


def corrected_table(data: Path, out: Path, corrections: dict[str, float]) -> Path:
    """A copy of ``data``'s ``images.csv`` with the spacing of the sources in ``corrections`` replaced."""
    import csv

    with open(data / "images.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["mpp"] = str(corrections.get(row["source"], row["mpp"]))
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def validation_split(data: Path, corrections: dict[str, float], val_fraction: float = 0.2, seed: int = 0):
    """The by-slide split of ``data`` exactly as ``midog-viewer train --points`` makes it, spacings corrected."""
    import tempfile

    from midog_viewer.train.data import DataSpec, gather

    with tempfile.TemporaryDirectory() as scratch:
        table = corrected_table(data, Path(scratch) / "images.csv", corrections)
        return gather(DataSpec(points=str(data / "objects.csv"), images=str(data), image_table=str(table),
                               val_fraction=val_fraction, seed=seed))


def lookalikes_boxed(images, predictions, threshold: float) -> tuple[int, int]:
    """(hard negatives with a "mitotic figure" box ≥ threshold within the hit radius, hard negatives)."""
    from midog_viewer.classes import CLASS_NAMES, HARD_NEGATIVE, MITOTIC_FIGURE
    from midog_viewer.evaluate import RADIUS_UM

    negative, mitotic = CLASS_NAMES.index(HARD_NEGATIVE), CLASS_NAMES.index(MITOTIC_FIGURE)
    boxed = total = 0
    for image, found in zip(images, predictions):
        negatives = image.boxes[image.labels == negative]
        total += len(negatives)
        keep = (found.labels == mitotic) & (found.scores >= threshold)
        if not len(negatives) or not keep.any():
            continue
        centres = (negatives[:, :2] + negatives[:, 2:]) / 2
        boxes = found.boxes[keep]
        hits = (boxes[:, :2] + boxes[:, 2:]) / 2
        distance = np.linalg.norm(centres[:, None, :] - hits[None, :, :], axis=2) * image.mpp
        boxed += int((distance.min(axis=1) <= RADIUS_UM).sum())
    return boxed, total


def mosaics(images, size: int = 4, side: int = 128):
    """Crops of one source at ``side`` px placed ``size`` × ``size`` (white where a crop is smaller)."""
    from midog_viewer.train.sources import LabelledImage

    out = []
    for start in range(0, len(images), size * size):
        group = images[start : start + size * size]
        canvas = np.full((size * side, size * side, 3), 255, np.uint8)
        boxes, labels = [], []
        for k, image in enumerate(group):
            oy, ox = (k // size) * side, (k % size) * side
            pixels = image.pixels[:side, :side]
            canvas[oy : oy + pixels.shape[0], ox : ox + pixels.shape[1]] = pixels
            for box, label in zip(image.boxes, image.labels):
                boxes.append(box + np.array([ox, oy, ox, oy], np.float32))
                labels.append(label)
        mosaic = LabelledImage(f"mosaic-{start}", np.array(boxes).reshape(-1, 4), np.array(labels, np.int64),
                               canvas.shape[1], canvas.shape[0], float(group[0].mpp), pixels=canvas)
        out.append((mosaic, len(group)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: the shipped real-tissue model)")
    parser.add_argument("--data", default=str(DATA), help="the real_mitosis folder")
    parser.add_argument("--score-thr", type=float, help="default: the model's operating point")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, help="only this many validation crops per source (a quick look)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--stated-spacing", action="store_true",
                        help="read every image at the spacing images.csv states (no SPACING_CORRECTIONS)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from midog_viewer.detect.engine import Detector, _read_rgb
    from midog_viewer.detect.models import REAL_MODEL
    from midog_viewer.detect.stain import MacenkoNormalizer
    from midog_viewer.train.validate import (
        REFERENCE_MITOSES_PER_MM2,
        field_scores,
        field_scores_by_source,
        midog_scores,
        predict_images,
    )

    data = Path(args.data)
    if not data.is_dir():
        print(f"real_mitosis not found at {data}", file=sys.stderr)
        return 2
    corrections = {} if args.stated_spacing else SPACING_CORRECTIONS
    split = validation_split(data, corrections, args.val_fraction, args.seed)
    if args.limit:
        split.val = [im for source in sorted({im.source for im in split.val})
                     for im in [im for im in split.val if im.source == source][: args.limit]]
    model_path = Path(args.model) if args.model else REAL_MODEL.path
    detector = Detector(model_path, device="cpu", score_thr=0.05)
    threshold = float(detector.info.config.score_threshold if args.score_thr is None else args.score_thr)

    started = time.perf_counter()
    # As the model was trained (and as `detect` runs it): with or without Macenko, as its checkpoint says.
    stain = detector.stain_normalize
    predictions = predict_images(detector.model, split.val, "cpu", stain_normalise=stain)
    crop_seconds = time.perf_counter() - started
    overall = field_scores(split.val, predictions, threshold, REFERENCE_MITOSES_PER_MM2)
    per_source = field_scores_by_source(split.val, predictions, threshold, REFERENCE_MITOSES_PER_MM2)

    # Mosaics of each source's crops: 4 x 4 of the 128 px crops, as the held-out crop target is scored; the
    # smaller crops of the other sources as many as fill the same 512 px. Mixed in order (seeded), so a
    # mosaic of a source with background crops holds both.
    mosaic_rows, mosaic_found, small_found, mosaic_off, small_off = {}, [], [], [], []
    for source in sorted({im.source for im in split.val}):
        crops = [im for im in split.val if im.source == source and im.pixels is not None]
        if not crops:
            continue
        side = max(im.width for im in crops)
        np.random.default_rng(args.seed).shuffle(crops)
        # one spacing per mosaic (AMi-Br/MIDOG21 mixes 0.23 and 0.25 µm/px scanners)
        built = [m for mpp in sorted({im.mpp for im in crops})
                 for m, _ in mosaics([im for im in crops if im.mpp == mpp], size=MOSAIC_SIDE // side, side=side)]
        found = predict_images(detector.model, built, "cpu", stain_normalise=stain)
        moved = off_grid(built, args.seed)
        found_off = predict_images(detector.model, moved, "cpu", stain_normalise=stain)
        scores, off = midog_scores(built, found, threshold), midog_scores(moved, found_off, threshold)
        if side == 128:  # the crop target's own form: the sweep uses these
            mosaic_found.append((built, found, len(crops)))
            mosaic_off.append((moved, found_off, len(crops)))
        else:
            small_found.append((source, built, found))
            small_off.append((source, moved, found_off))
        boxed, negatives = lookalikes_boxed(built, found, threshold)
        mosaic_rows[source] = {
            "crops": len(crops),
            "grid": MOSAIC_SIDE // side,
            "mitoses": scores["tp"] + scores["fn"],
            "recall": scores["tp"] / max(scores["tp"] + scores["fn"], 1),
            "precision": scores["tp"] / max(scores["tp"] + scores["fp"], 1),
            "other_detections_per_crop": scores["fp"] / len(crops),
            "lookalikes": negatives,
            "lookalikes_boxed": boxed,
            "off_grid_recall": off["tp"] / max(off["tp"] + off["fn"], 1),
            "off_grid_other_detections_per_crop": off["fp"] / len(crops),
            "off_grid_lookalikes_boxed": lookalikes_boxed(moved, found_off, threshold)[0],
        }

    # Ordinary real tissue outside the training data: every box on CMU-1 at a threshold is an upper bound of
    # the false positives there (it is skin; no box at 0.90 of earlier models was a mitosis).
    from midog_viewer.classes import MITOTIC_FIGURE
    from midog_viewer.detect.tissue import detect_tissue, tissue_filter
    from midog_viewer.io import open_slide

    svs = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
    with open_slide(svs) as slide:
        # the right 40 % only: training may use the left 60 % as background (see the model card)
        x0 = int(slide.width * CMU1_TRAINING_SHARE)
        region = (x0, 0, slide.width - x0, slide.height)
        tissue = detect_tissue(slide)
        on_svs = detector.detect(slide, region, tile_filter=tissue_filter(tissue))
        sx = tissue.scale[0]
        share = float(tissue.mask[:, int(x0 / sx):].mean())  # tissue share of the measured part
        tissue_mm2 = share * region[2] * region[3] * (slide.mpp / 1000) ** 2
    mitotic = np.array(on_svs.label_names()) == MITOTIC_FIGURE
    svs_scores = on_svs.scores[mitotic]
    def pooled(mosaic_sets, small_sets, thr):
        """(recall, other detections per crop) of the 128 px mosaics; small-crop recall per source; look-alike share."""
        tp = fn = fp = crops = 0
        for images, found, n in mosaic_sets:
            sc = midog_scores(images, found, thr)
            tp, fn, fp, crops = tp + sc["tp"], fn + sc["fn"], fp + sc["fp"], crops + n
        small_tp = small_n = boxed = negatives = 0
        small_recall = {}
        for source, images, found in small_sets:
            sc = midog_scores(images, found, thr)
            small_tp, small_n = small_tp + sc["tp"], small_n + sc["tp"] + sc["fn"]
            small_recall[source] = sc["tp"] / max(sc["tp"] + sc["fn"], 1)
            b, n = lookalikes_boxed(images, found, thr)
            boxed, negatives = boxed + b, negatives + n
        return (tp / max(tp + fn, 1), fp / max(crops, 1), small_tp / max(small_n, 1), small_recall,
                boxed / max(negatives, 1))

    d = REFERENCE_MITOSES_PER_MM2
    sweep = []
    for thr in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97):
        recall, other, small, small_recall, share = pooled(mosaic_found, small_found, thr)
        recall_off, _, small_off_recall, _, share_off = pooled(mosaic_off, small_off, thr)
        per_mm2 = float((svs_scores >= thr).sum()) / tissue_mm2
        sweep.append({"threshold": thr, "mosaic_recall": recall, "other_detections_per_crop": other,
                      "small_crop_recall": small, "small_crop_recall_by_source": small_recall,
                      "lookalikes_boxed_share": share,
                      "off_grid_mosaic_recall": recall_off, "off_grid_small_crop_recall": small_off_recall,
                      "off_grid_lookalikes_boxed_share": share_off,
                      "cmu1_detections_per_mm2": per_mm2,
                      "field_f1_implied": 2 * recall * d / (recall * d + d + per_mm2),
                      "field_f1_with_lookalikes":
                          2 * recall * d / (recall * d + d + LOOKALIKES_PER_MM2 * share + per_mm2),
                      "field_f1_off_grid":
                          2 * recall_off * d / (recall_off * d + d + LOOKALIKES_PER_MM2 * share_off + per_mm2)})

    # CPU time per 512 px tile: the model against reading + stain normalisation alone.

    tile_image = REPO.parent / "shared" / "data" / "tiles" / "tiatoolbox_target_image.png"
    with open_slide(tile_image) as slide:
        tiles = [(x, y, 512, 512) for x in (0, 488) for y in (0, 488)]
        started = time.perf_counter()
        for tile in tiles:
            MacenkoNormalizer().fit(_read_rgb(slide, tile))
        baseline = (time.perf_counter() - started) / len(tiles)
        started = time.perf_counter()
        for tile in tiles:
            detector.detect(slide, tile)
        per_tile = (time.perf_counter() - started) / len(tiles)

    # The model's second look against one look: the 128 px mosaics off the grid, and the same tiles timed.
    second_look = None
    if detector.second_look is not None:
        tp = fn = tp_once = fn_once = 0
        for moved, found_off, _ in mosaic_off:
            once = predict_images(detector.model, moved, "cpu", stain_normalise=stain, second_look=False)
            sc, sc_once = midog_scores(moved, found_off, threshold), midog_scores(moved, once, threshold)
            tp, fn, tp_once, fn_once = tp + sc["tp"], fn + sc["fn"], tp_once + sc_once["tp"], fn_once + sc_once["fn"]
        one_look = Detector.from_model(detector.model, detector.info, "cpu", 0.05, stain, second_look=False)
        with open_slide(tile_image) as slide:
            started = time.perf_counter()
            for tile in tiles:
                one_look.detect(slide, tile)
            per_tile_once = (time.perf_counter() - started) / len(tiles)
        second_look = {"side_px": detector.second_look.side, "floor": detector.second_look.floor,
                       "off_grid_mosaic_recall": tp / max(tp + fn, 1),
                       "off_grid_mosaic_recall_one_look": tp_once / max(tp_once + fn_once, 1),
                       "cpu_s_per_512_tile_one_look": per_tile_once}

    figures = {
        "model": str(model_path),
        "spacing_corrections": corrections,
        "score_threshold": threshold,
        "field_mitoses_per_mm2": REFERENCE_MITOSES_PER_MM2,
        "val_images": len(split.val),
        "overall": {k: v for k, v in overall.items() if k != "per_source"},
        "per_source": per_source,
        "mosaics": mosaic_rows,
        "cmu1_tissue_mm2": tissue_mm2,
        "cmu1_detections_at_threshold": int((svs_scores >= threshold).sum()),
        "threshold_sweep": sweep,
        "cpu_s_per_512_tile": per_tile,
        "baseline_read_and_stain_fit_s_per_tile": baseline,
        "ratio": per_tile / baseline if baseline else None,
        "val_crop_seconds": crop_seconds,
        "threads": args.threads,
        "second_look": second_look,
    }
    print(f"model {model_path.name} at score >= {threshold:.2f}; field F1 assumes {REFERENCE_MITOSES_PER_MM2}/mm²")
    print(f"{'source':24s} {'crops':>5s} {'recall':>6s} {'prec':>6s} {'FP/mm2':>7s} {'FP/crop':>7s} {'field F1':>8s}")
    for name, row in {**per_source, "all": overall}.items():
        print(f"{name:24s} {row['images']:5d} {row['recall']:6.3f} {row['crop_precision']:6.3f} "
              f"{row['fp_per_mm2']:7.1f} {row['fp_per_image']:7.3f} {row['f1']:8.3f}")
    for name, row in mosaic_rows.items():
        grid = f"{row['grid']}x{row['grid']}"
        print(f"mosaics {grid:5s} {name:20s} crops {row['crops']:4d}  mitoses {row['mitoses']:4d}  "
              f"recall {row['recall']:.3f}  precision {row['precision']:.3f}  "
              f"other detections/crop {row['other_detections_per_crop']:.3f}  "
              f"look-alikes boxed {row['lookalikes_boxed']}/{row['lookalikes']}; off the grid: "
              f"recall {row['off_grid_recall']:.3f}, other/crop {row['off_grid_other_detections_per_crop']:.3f}, "
              f"look-alikes {row['off_grid_lookalikes_boxed']}")
    print(f"CMU-1 SVS, right 40 % ({tissue_mm2:.2f} mm² of tissue, no mitosis labelled): "
          f"{figures['cmu1_detections_at_threshold']} boxes at >= {threshold:.2f}")
    small_sources = sorted(sweep[0]["small_crop_recall_by_source"])
    print(f"{'thr':>5s} {'mosaic recall':>13s} {'other/crop':>10s} "
          + "".join(f"{name[:18] + ' recall':>26s}" for name in small_sources)
          + f" {'look-alikes boxed':>17s} {'CMU-1 /mm2':>10s} {'implied field F1':>16s}"
          f" {f'with {LOOKALIKES_PER_MM2:g} look-alikes/mm2':>26s} {'off-grid recall':>15s} {'look-alikes':>11s}"
          f" {'field F1 off grid':>17s}")
    for row in sweep:
        print(f"{row['threshold']:5.2f} {row['mosaic_recall']:13.3f} {row['other_detections_per_crop']:10.3f} "
              + "".join(f"{row['small_crop_recall_by_source'][name]:26.3f}" for name in small_sources)
              + f" {row['lookalikes_boxed_share']:17.3f} "
              f"{row['cmu1_detections_per_mm2']:10.2f} {row['field_f1_implied']:16.3f}"
              f" {row['field_f1_with_lookalikes']:26.3f} {row['off_grid_mosaic_recall']:15.3f}"
              f" {row['off_grid_lookalikes_boxed_share']:11.3f} {row['field_f1_off_grid']:17.3f}")
    print(f"CPU per 512 px tile: {per_tile:.2f} s (read + stain fit alone {baseline:.3f} s; ratio {figures['ratio']:.1f})")
    if second_look is not None:
        once_s = second_look["cpu_s_per_512_tile_one_look"]
        print(f"second look ({second_look['side_px']} px windows, candidates >= {second_look['floor']:.2f}): "
              f"off-grid 128 px mosaic recall {second_look['off_grid_mosaic_recall']:.3f} against "
              f"{second_look['off_grid_mosaic_recall_one_look']:.3f} with one look; CPU per tile {per_tile:.2f} s "
              f"against {once_s:.2f} s (ratio {per_tile / once_s:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
