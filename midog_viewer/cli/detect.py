"""``midog-viewer detect``: run the mitosis detector on a slide region and write the boxes as JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from midog_viewer.cli import positive_number

_BAR_WIDTH = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect mitotic figures in a slide (or a region of it) and write the boxes",
        description="Run the Cascade R-CNN detector over 512 px tiles (64 px overlap) of SLIDE at level 0, merge "
        "duplicates at tile seams, and write the detections in level-0 pixels to OUT (.json or .csv).",
    )
    parser.add_argument("slide", metavar="SLIDE", help="slide or image file (SVS, NDPI, TIFF, PNG, JPEG, DICOM)")
    parser.add_argument("--model", metavar="CKPT",
                        help="our .safetensors checkpoint or an mmdet .pth (default: the built-in real-tissue model; "
                             "the synthetic demo model for the synthetic sample)")
    parser.add_argument("--config", metavar="MMDET_CONFIG",
                        help="mmdet .py config of an mmdet checkpoint (default: the config stored in the .pth)")
    parser.add_argument("--region", metavar="X,Y,W,H", help="level-0 region to search (default: the whole slide)")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), help="default: cuda, then mps, then cpu")
    parser.add_argument("--score-thr", type=float, metavar="T",
                        help="minimum score (default: the model's operating point, 0.5 if it records none)")
    parser.add_argument("--no-stain", action="store_true", help="skip Macenko stain normalisation (default: as the model was trained)")
    parser.add_argument("--no-resample", action="store_true",
                        help="read tiles as they are, even if the slide's µm/px differs from the model's")
    parser.add_argument("--mpp", type=positive_number, metavar="UM",
                        help="µm per pixel of SLIDE, for an image whose file records none (a PNG or JPEG frame: "
                             "else read at the model's spacing) or records a wrong one")
    parser.add_argument("--no-second-look", action="store_true",
                        help="score each candidate once, where the tile grid put it (default: as the model says; the "
                             "built-in real-tissue model scores each candidate again on a window centred on it)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="tiles per batch (default: by memory)")
    parser.add_argument("--atypical-model", metavar="CKPT",
                        help="atypical classifier .safetensors for p_atypical (default: the shipped model)")
    parser.add_argument("--no-atypical", action="store_true", help="skip p_atypical of mitotic figures")
    parser.add_argument("--out", required=True, metavar="OUT", help="output file: .json or .csv")
    parser.set_defaults(func=handle_detect)


def parse_region(text: str | None) -> tuple[int, int, int, int] | None:
    """``"X,Y,W,H"`` → a tuple of four integers (None stays None)."""
    from midog_viewer.errors import SlideError

    if text is None:
        return None
    parts = text.split(",")
    try:
        values = tuple(int(p.strip()) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise SlideError(f"--region must be four integers X,Y,W,H, not {text!r}.")
    return values  # type: ignore[return-value]


def _progress(done: int, total: int) -> None:
    filled = int(_BAR_WIDTH * done / max(total, 1))
    end = "\n" if done >= total else ""
    print(f"\rdetect [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total} tiles", end=end,
          file=sys.stderr, flush=True)


def handle_detect(args: argparse.Namespace) -> int:
    from midog_viewer.detect import Detections, Detector
    from midog_viewer.detect.engine import clip_region
    from midog_viewer.errors import AnnotationFormatError
    from midog_viewer.io import open_slide

    from midog_viewer.formats import atomic

    out = Path(args.out)
    if out.suffix.lower() not in (".json", ".csv"):
        raise AnnotationFormatError(f"--out must end in .json or .csv, not {out.name!r}.")
    atomic.check_target(out)  # a bad output is refused before hours of detection, not after
    region = parse_region(args.region)
    atypical = None
    if not args.no_atypical:
        from midog_viewer.atypical import load_classifier

        atypical = load_classifier(args.atypical_model)[0]
    from midog_viewer.detect.models import default_model_for, is_synthetic_image

    detector = Detector(
        model_path=args.model or default_model_for(args.slide).path,
        device=args.device,
        score_thr=args.score_thr,
        stain_normalize=False if args.no_stain else None,
        batch_size=args.batch_size,
        mmdet_config=args.config,
        resample=not args.no_resample,
        second_look=False if args.no_second_look else None,
    )
    open_slide(args.slide).close()  # an unreadable slide is refused before the model loads
    with open_slide(args.slide) as slide:
        clip_region(slide, region)  # a region outside the slide is refused before any notice
        if args.mpp is not None:
            slide.mpp = args.mpp
        elif slide.mpp is None and detector.resample and detector.model_mpp:
            print(f"{Path(args.slide).name} records no pixel spacing: read at the model's {detector.model_mpp:.3f} "
                  "µm/px; give --mpp if it was scanned at another", file=sys.stderr)
        zoom = detector.zoom_for(slide)
        if zoom != 1.0:
            print(f"slide at {slide.mpp:.3f} µm/px, model at {detector.model_mpp:.3f} µm/px: tiles resampled x{zoom:.2f}",
                  file=sys.stderr)
        tissue_fraction, tile_filter = None, None
        if region is None:  # the whole image: only the tiles that hold tissue
            from midog_viewer.detect.tissue import detect_tissue, tissue_filter

            tissue = detect_tissue(slide)
            tissue_fraction, tile_filter = tissue.fraction, tissue_filter(tissue)
            print(f"tissue: {tissue_fraction:.1%} of the slide" if tissue_fraction else
                  "no tissue found: every tile is searched", file=sys.stderr)
        result = Detections(class_names=detector.class_names)
        for progress in detector.iter_detect(slide, region, tile_filter=tile_filter):
            _progress(progress.done, progress.total)
            result = progress.merged
        records = result.to_records()
        if atypical is not None:
            from midog_viewer.atypical import atypical_scores

            for record, p in zip(records, atypical_scores(slide, result, atypical)):
                record["p_atypical"] = None if p != p else round(float(p), 6)  # NaN: not a mitotic figure
    if out.suffix.lower() == ".json":
        document = {"slide": str(args.slide), "model": str(detector.info.path), "resample_zoom": zoom,
                    "second_look_px": detector.second_look.side if detector.second_look else None,
                    "tissue_fraction": tissue_fraction, "detections": records}
        if atypical is not None:
            document["atypical_model"] = str(args.atypical_model or "built-in")
            document["atypical_threshold"] = atypical.config.threshold
        atomic.write_text(out, json.dumps(document, indent=1) + "\n")
    else:
        with atomic.open_text(out, newline="") as handle:
            columns = ["x1", "y1", "x2", "y2", "score", "label"] + (["p_atypical"] if atypical is not None else [])
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
    if detector.tissue.synthetic and not is_synthetic_image(args.slide):
        print(f"warning: {detector.tissue.name} learnt {detector.tissue.tissue}; on real tissue its boxes are not "
              "mitoses", file=sys.stderr)
    counts = {name: result.label_names().count(name) for name in detector.class_names}
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    print(f"{len(result)} detections ({summary}) on {detector.device_name} written to {out}")
    return 0
