"""Sub-commands of the review core: ``import``, ``export``, ``counts`` and ``evaluate``.

Every output file goes through :mod:`midog_viewer.formats.atomic`: written whole or not at all, never over
the review database (or the evaluation's own inputs), never over a device or folder; a missing,
read-only or full location is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from midog_viewer.cli import positive_number

#: What the precision-recall figure can be saved as (matplotlib picks the format by the suffix).
_FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add import, export, counts and evaluate to the ``midog-viewer`` command."""
    from midog_viewer.evaluate import RADIUS_UM
    from midog_viewer.formats import EXPORT_FORMATS, IMPORT_FORMATS
    from midog_viewer.review.counts import DEFAULT_HPF_MM2, WINDOWS
    from midog_viewer.review.exporting import SELECTIONS

    p = subparsers.add_parser("import", help="import an annotation file into a review database as ground truth")
    p.add_argument("file", type=Path, help="MIDOG/COCO JSON, SlideRunner .sqlite, QuPath .geojson or .csv")
    p.add_argument("--db", type=Path, required=True, help="review database (created if missing)")
    p.add_argument("--images", type=Path, help="folder of the images, to register them with their real size and mpp")
    p.add_argument("--format", dest="fmt", choices=IMPORT_FORMATS,
                   help="file format (default: from the suffix; midog = COCO-like with bbox x1,y1,x2,y2, "
                        "coco = standard bbox x,y,w,h)")
    p.add_argument("--image", help="GeoJSON only: the image the objects belong to (default: by file stem)")
    p.add_argument("--point-box-px", type=positive_number, default=50.0, help="box side for point labels, pixels (default 50)")
    p.add_argument("--point-box-um", type=positive_number, help="box side for point labels in µm, where the mpp is known")
    p.add_argument("--reviewer", help="name recorded as who imported (default: the login name)")
    p.add_argument("--json", action="store_true", help='print {"images": n, "classes": {...}} as JSON')
    p.set_defaults(func=_import)

    p = subparsers.add_parser("export", help="export a review database's labels to another format")
    p.add_argument("--db", type=Path, required=True, help="review database")
    p.add_argument("--format", dest="fmt", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--out", type=Path, required=True, help="output file (GeoJSON: a folder for several slides)")
    p.add_argument("--objects", choices=SELECTIONS,
                   help="reviewed labels (default), every detection with its score, or all (default for csv)")
    p.add_argument("--slide", action="append", help="only this slide (file name); repeatable")
    p.add_argument("--xywh", action="store_true", help="coco only: write standard COCO [x, y, w, h] boxes")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("counts", help="mitoses per HPF, per 10 HPF and per 2 mm², hotspot and mitotic score")
    p.add_argument("--db", type=Path, required=True, help="review database")
    p.add_argument("--hpf-mm2", type=positive_number, default=DEFAULT_HPF_MM2,
                   help=f"area of one high-power field in mm² (default {DEFAULT_HPF_MM2:g})")
    p.add_argument("--slide", action="append", help="only this slide (file name); repeatable")
    p.add_argument("--mpp", type=positive_number, help="µm per pixel for slides whose pixel size is unknown")
    p.add_argument("--window", choices=WINDOWS, default=WINDOWS[0], help="hotspot window (default 10 HPF)")
    p.add_argument("--grid", action="store_true", help="count on a grid even where HPFs were drawn")
    p.add_argument("--include-pending", action="store_true",
                   help="count unreviewed mitotic-figure detections at or above the operating threshold too")
    p.add_argument("--score-thr", type=_score, metavar="T",
                   help="operating threshold for pending detections (default: the one the slide's detection run "
                        "recorded, else the detector's 0.5)")
    p.add_argument("--csv", type=Path, help="write one row per HPF to this CSV")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=_counts)

    p = subparsers.add_parser("evaluate", help="the official MIDOG metric: TP/FP/FN, precision, recall, F1, AP")
    p.add_argument("--gt", type=Path, required=True, help="the organisers' ground_truth.json (case → points in mm)")
    p.add_argument("--pred", type=Path, required=True,
                   help="prediction folder (predictions.json + */output/mitotic-figures.json) or one JSON "
                        "mapping case → \"Multiple points\"")
    p.add_argument("--radius-um", type=positive_number, default=RADIUS_UM, help=f"hit radius in µm (default {RADIUS_UM:g})")
    p.add_argument("--metrics", type=Path, help="write the organisers' metrics.json layout (aggregates) here")
    p.add_argument("--cases-csv", type=Path, help="write one row per case here")
    p.add_argument("--curve-csv", type=Path, help="write F1 against the score threshold here")
    p.add_argument("--pr-png", type=Path, help="draw the precision-recall curve to this PNG")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_evaluate)


def _score(text: str) -> float:
    """argparse type: a score threshold in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text!r}")
    return value


def _import(args: argparse.Namespace) -> int:
    from midog_viewer.errors import AnnotationFormatError
    from midog_viewer.formats import atomic
    from midog_viewer.review.importing import import_file, summary_line
    from midog_viewer.review import ReviewStore

    if not args.file.is_file():  # before the database is created
        raise AnnotationFormatError(f"{args.file} does not exist or is not a file.")
    created = not args.db.exists() and not args.db.is_symlink()
    try:
        with ReviewStore(args.db, reviewer=args.reviewer) as store:
            summary = import_file(
                store, args.file, fmt=args.fmt, images_dir=args.images, image_name=args.image,
                point_box_px=args.point_box_px, point_box_um=args.point_box_um,
            )
    except BaseException:
        if created:  # a failed import (whatever the error) into a new database leaves no database behind
            for leftover in (args.db, *(args.db.with_name(args.db.name + end) for end in atomic.SIDE_FILES)):
                leftover.unlink(missing_ok=True)
        raise
    print(json.dumps(summary.as_json()) if args.json else summary_line(summary))
    return 0


def _existing_db(path: Path) -> Path:
    """Commands that only read a database must not create an empty one by a typo."""
    from midog_viewer.errors import ReviewStoreError

    if not path.is_file():
        raise ReviewStoreError(f"there is no review database at {path}.")
    return path


def _export(args: argparse.Namespace) -> int:
    from midog_viewer.review.exporting import export_store
    from midog_viewer.review import ReviewStore

    with ReviewStore(_existing_db(args.db), read_only=True) as store:
        summary = export_store(store, args.fmt, args.out, selection=args.objects, slide_names=args.slide,
                               bbox_format="xywh" if args.xywh else "xyxy")
    print(f"wrote {summary.objects:,} objects of {summary.slides} slides to {summary.path}")
    return 0


def _counts(args: argparse.Namespace) -> int:
    from midog_viewer.errors import ReviewStoreError
    from midog_viewer.formats import atomic
    from midog_viewer.review import ReviewStore
    from midog_viewer.review.counts import count_slide, write_counts_csv

    if args.csv:  # refuse a bad output before the work
        atomic.check_target(args.csv, atomic.store_files(args.db))
    with ReviewStore(_existing_db(args.db), read_only=True) as store:
        if args.slide:
            slides = []
            for name in args.slide:
                slide = store.find_slide(name)
                if slide is None:
                    raise ReviewStoreError(f"{args.db.name} has no slide named {name!r}.")
                if not args.json and Path(name).exists() and Path(slide.path) != Path(name).resolve():
                    print(f"found the review of {Path(name).name} (stored as {slide.path})")
                slides.append(slide)
        else:
            slides = store.slides()
        results = [
            count_slide(store, slide.id, hpf_mm2=args.hpf_mm2, use_drawn=not args.grid, count_pending=args.include_pending,
                        window=args.window, mpp=args.mpp if not slide.mpp else None, score_thr=args.score_thr)
            for slide in slides
        ]
    if args.csv:
        atomic.replace_file(args.csv, lambda temp: write_counts_csv(temp, results), atomic.store_files(args.db))
    if args.json:
        print(json.dumps({"hpf_mm2": args.hpf_mm2, "slides": [r.as_json() for r in results]}))
        return 0
    for r in results:
        print(f"{r.slide}: {r.totals['mitoses']} mitoses in {len(r.fields)} {r.field_source} HPF ({r.area_mm2:.3f} mm²); "
              f"{r.per_10_hpf:.1f} per 10 HPF, {r.per_2_mm2:.1f} per 2 mm²; hotspot {r.hotspot.mitoses}; "
              f"mitotic score {r.mitotic_score.score}; pending {r.totals['pending']}"
              f"{'' if r.score_thr is None else f' (score >= {r.score_thr:g})'}, "
              f"rejected {r.totals['rejected']}")
        share = "–" if r.atypical_share is None else f"{r.atypical_share:.0%}"
        print(f"  atypical: {r.totals['atypical']} of {r.totals['mitoses']} mitoses ({share}); "
              f"{r.atypical_per_hpf:.2f} per HPF, {r.atypical_per_10_hpf:.1f} per 10 HPF, "
              f"{r.atypical_per_2_mm2:.1f} per 2 mm²")
    if results:
        print(f"mitotic score thresholds: {results[0].mitotic_score.scaling}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import csv

    from midog_viewer.errors import AnnotationFormatError
    from midog_viewer.evaluate import evaluate_cases, write_pr_curve
    from midog_viewer.formats import atomic
    from midog_viewer.formats.gc_points import read_ground_truth, read_predictions

    outputs = [p for p in (args.metrics, args.cases_csv, args.curve_csv, args.pr_png) if p]
    inputs = [args.gt, args.pred] + ([args.pred / "predictions.json"] if args.pred.is_dir() else [])
    # refuse a bad output before the work; the inputs are guarded here, the writes below re-check the rest
    real = [atomic.check_target(p, inputs, "an input of this evaluation") for p in outputs]
    if len(set(real)) != len(real):
        raise AnnotationFormatError("two of --metrics, --cases-csv, --curve-csv and --pr-png name the same file.")
    if args.pr_png and args.pr_png.suffix.lower() not in _FIGURE_SUFFIXES:
        raise AnnotationFormatError(f"--pr-png must end in {', '.join(_FIGURE_SUFFIXES)}, not {args.pr_png.name!r}.")
    evaluation = evaluate_cases(read_ground_truth(args.gt), read_predictions(args.pred), args.radius_um / 1000.0)
    if args.metrics:
        results = [{"image": c.case, "metrics": {"true_positives": c.tp, "false_negatives": c.fn, "false_positives": c.fp},
                    "tumor_domain": c.tumor_domain, "roi_type": c.roi_type} for c in evaluation.cases]
        atomic.write_text(args.metrics, json.dumps({"results": results, "aggregates": evaluation.aggregates}, indent=4))
    for path, rows in ((args.cases_csv, evaluation.case_rows()), (args.curve_csv, evaluation.threshold_curve())):
        if path and rows:
            with atomic.open_text(path, newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    if args.pr_png:
        atomic.replace_file(args.pr_png, lambda temp: write_pr_curve(evaluation, temp))
    if args.json:
        print(json.dumps(evaluation.summary()))
        return 0
    for row in evaluation.case_rows():
        print(f"{row['case']}: TP {row['tp']}, FP {row['fp']}, FN {row['fn']}")
    a = evaluation.aggregates
    print(f"TP {evaluation.tp}, FP {evaluation.fp}, FN {evaluation.fn}: precision {a['precision']:.4f}, "
          f"recall {a['recall']:.4f}, F1 {a['f1_score']:.4f}, AP {a['AP']:.4f}")
    if evaluation.missing_cases:
        print(f"cases without predictions (all false negatives): {', '.join(evaluation.missing_cases)}")
    if evaluation.suspicious_cases():
        print(f"points beyond 10 mm (pixel coordinates instead of mm?): {', '.join(evaluation.suspicious_cases())}")
    return 0
