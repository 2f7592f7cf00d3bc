"""``midog-viewer train``: train or fine-tune the detector in this process, writing a run folder."""

from __future__ import annotations

import argparse
import json
import sys

from midog_viewer.cli.stopping import stop_on_signals
from midog_viewer.detect.config import PRESET_NAMES
from midog_viewer.formats.midog_coco import BBOX_FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the detector on reviewed labels, a MIDOG COCO file or synthetic figures",
        description="Train or fine-tune the mitosis detector. Writes RUN_DIR/progress.jsonl, a checkpoint per "
        "epoch, best.safetensors and last.safetensors, and metrics.json with the validation MIDOG F1. "
        "SIGTERM or Ctrl-C stops after the current step and keeps the last checkpoint; --resume continues.",
    )
    data = parser.add_argument_group("data (one or more sources; split by image)")
    data.add_argument("--db", action="append", default=[], metavar="DB", help="review database (repeatable)")
    data.add_argument("--coco", metavar="JSON", help="MIDOG COCO-style annotation file")
    data.add_argument("--images", metavar="DIR", help="folder holding the images the --coco or --points file names")
    data.add_argument("--points", metavar="CSV",
                      help="CSV of object centres (image, x, y, class; optional mpp, slide) in the --images folder: "
                           "crop data sets; images without a row are background; split by slide")
    data.add_argument("--image-table", metavar="CSV",
                      help="CSV naming every image of --points (file, and optional mpp, slide, source)")
    data.add_argument("--split", metavar="FILE", help="train_val_split.txt-style split of the --coco images")
    data.add_argument("--bbox-format", choices=BBOX_FORMATS, default=BBOX_FORMATS[0],
                      help="bbox layout in --coco (MIDOG files: xyxy, the default; standard COCO: xywh)")
    data.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N synthetic HPFs")
    data.add_argument("--synthetic-size", type=int, default=512, metavar="PX", help="side of the synthetic HPFs")
    data.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                      help="share of images for validation when no --split is given (default 0.2)")
    model = parser.add_argument_group("model")
    model.add_argument("--config", choices=PRESET_NAMES, help="architecture (may be left out with --init)")
    model.add_argument("--init", metavar="CKPT", help="fine-tune from this checkpoint (ours or an mmdet .pth)")
    model.add_argument("--baseline", metavar="CKPT", help="model to compare against on validation (default: --init)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="RUN_DIR", help="run folder to write (default with --resume: the resumed one)")
    run.add_argument("--resume", metavar="RUN", help="continue the run saved in this folder (in it, unless --out)")
    run.add_argument("--epochs", type=int, help="epochs in all (default 50; on --resume, the saved run's)")
    run.add_argument("--batch-size", type=int, help="patches per step (default 4)")
    run.add_argument("--lr", type=float, help="base learning rate (default 0.01)")
    run.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default 500)")
    run.add_argument("--lr-decay", type=int, nargs="*", metavar="EPOCH", help="epochs after which lr is x0.1")
    run.add_argument("--patch-size", type=int, metavar="PX", help="training patch side (default 512)")
    run.add_argument("--rcnn-samples", type=int, metavar="N",
                     help="RoIs sampled per patch for the heads (default: the configuration's; fewer is faster)")
    run.add_argument("--random-patches", type=int, metavar="N",
                     help="also N patches per image at random positions, for the background (default 0)")
    run.add_argument("--mosaic", type=int, metavar="PX",
                     help="train on crops mosaicked into PX-wide fields and validate on mosaics of the validation "
                          "crops (default with --points: 512; 0: off)")
    run.add_argument("--hed-jitter", type=float, metavar="S", help="stain augmentation strength (e.g. 0.05; default 0)")
    run.add_argument("--blur", type=float, metavar="P", help="probability of a Gaussian blur (default 0)")
    run.add_argument("--blur-sigma", type=float, metavar="PX",
                     help="largest blur sigma in px (default 1.5), for scans further out of focus")
    run.add_argument("--repeat", action="append", default=[], metavar="SOURCE=K",
                     help="crops of this source (as named in --image-table) K times per epoch, for a small source "
                          "the model underfits (repeatable; crop mosaics only)")
    run.add_argument("--translate", type=int, metavar="PX",
                     help="shift each patch by a random 0..PX px right and down, so figures sit at every phase of "
                          "the network's stride grid (default 0)")
    run.add_argument("--second-look", type=int, metavar="PX",
                     help="the model scores each mitosis candidate again on a PX window centred on it (a multiple "
                          "of 32; 0: never), when validating and wherever it detects; for crop mosaics, whose "
                          "figures all sit at one phase of the stride grid (default: the --init model's, else 0)")
    run.add_argument("--lab-transfer", type=float, metavar="P",
                     help="probability of recolouring a mosaic to LAB statistics drawn from the training images' "
                          "spread (RandStainNA), for other labs' stain and scanner colours (crop mosaics only)")
    run.add_argument("--jpeg", type=float, metavar="P", help="probability of JPEG re-compression (default 0)")
    run.add_argument("--scale-jitter", type=float, metavar="F",
                     help="resize patches by up to ± this share (default 0.25), so the model meets scans whose "
                          "pixel spacing is a little off")
    run.add_argument("--field-density", type=float, metavar="PER_MM2",
                     help="validate by the F1 implied on a field with this many mitoses per mm² (default with "
                          "--points: 5.7, the MIDOG 2021 training set's)")
    run.add_argument("--tune-threshold", action="store_true",
                     help="choose the score threshold with the best validation F1 each epoch and store it in the "
                          "checkpoint as the model's operating point (default: F1 at 0.5)")
    run.add_argument("--log-every", type=int, metavar="STEPS", help="steps between progress lines (default 10)")
    run.add_argument("--workers", type=int, help="data-loading worker processes (default 0)")
    run.add_argument("--seed", type=int, help="seed of patch positions, augmentation and the random split")
    run.add_argument("--no-stain", action="store_true", help="skip Macenko stain normalisation")
    run.add_argument("--keep-epochs", type=int, metavar="K", help="keep only the K newest per-epoch checkpoints")
    run.add_argument("--device", default="cpu", help="cpu or cuda (default cpu); AMP is used on cuda")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=handle_train)


def handle_train(args: argparse.Namespace) -> int:
    from midog_viewer.errors import TrainingError
    from midog_viewer.train import DataSpec, Recipe, train

    if args.out is None and args.resume is None:
        raise TrainingError("name the run folder to write with --out RUN_DIR (or continue a run with --resume RUN).")
    out = args.out if args.out is not None else args.resume

    data = DataSpec(
        dbs=list(args.db),
        coco=args.coco,
        images=args.images,
        split=args.split,
        bbox_format=args.bbox_format,
        points=args.points,
        image_table=args.image_table,
        synthetic=args.synthetic,
        synthetic_size=args.synthetic_size,
        val_fraction=args.val_fraction,
        seed=args.seed or 0,
    )
    recipe = _recipe(args, Recipe)
    with stop_on_signals() as stop:
        result = train(
            None if data.empty else data,
            out,
            config=args.config,
            recipe=recipe,
            device=args.device,
            init=args.init,
            baseline=args.baseline,
            resume=args.resume,
            should_stop=stop,
            echo=None if args.quiet else _print_event,
        )
    summary = {
        "status": result.status,
        "run": str(result.run_dir),
        "val_f1": result.best_f1,
        "best_epoch": result.best_epoch,
        "baseline_f1": result.baseline_f1,
        "epochs_done": result.epochs_done,
        "step": result.step,
    }
    if args.json:
        print(json.dumps(summary))
    elif result.status == "cancelled":
        print(f"cancelled at step {result.step}; last checkpoint kept; resume with --resume {result.run_dir}",
              file=sys.stderr)
    else:
        f1 = "n/a" if result.best_f1 is None else f"{result.best_f1:.4f}"
        print(f"done: best validation F1 {f1} (epoch {result.best_epoch}); model {result.best_checkpoint}")
    return 0


def _print_event(event: dict) -> None:
    """One short line on stderr per progress event (the full record is in progress.jsonl)."""
    kind = event["event"]
    if kind == "start":
        line = (f"training on {event['train_images']} images ({event['train_patches']} patches), validating on "
                f"{event['val_images']}; {event['total_steps']} steps on {event['device']}")
    elif kind == "step":
        eta = event.get("eta_s")
        eta_text = f"{eta / 60:.0f} min" if eta is not None else "-"
        line = (f"step {event['step']}/{event['total_steps']}  epoch {event['epoch']:.2f}  loss {event['loss']:.4f}"
                f"  lr {event['lr']:.5f}  ETA {eta_text}")
    elif kind in ("epoch", "baseline"):
        what = f"epoch {event['epoch']}" if kind == "epoch" else "starting model"
        best = " (best so far)" if event.get("best") else ""
        line = f"{what}: validation F1 {event['val_f1']:.4f}{best}"
    else:
        return
    print(line, file=sys.stderr, flush=True)


def _recipe(args: argparse.Namespace, recipe_cls):
    """The recipe from the options given; None on --resume with no option, so the saved one is reused."""
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "lr_decay_epochs": tuple(args.lr_decay) if args.lr_decay is not None else None,
        "workers": args.workers,
        "patch_size": args.patch_size,
        "random_patches_per_image": args.random_patches,
        "rcnn_samples": args.rcnn_samples,
        "log_every": args.log_every,
        "seed": args.seed,
        "keep_epoch_checkpoints": args.keep_epochs,
        "stain_normalise": False if args.no_stain else None,
        "hed_jitter": args.hed_jitter,
        "blur_probability": args.blur,
        "blur_max_sigma": args.blur_sigma,
        "source_repeats": _source_repeats(args.repeat),
        "jpeg_probability": args.jpeg,
        "lab_transfer_probability": args.lab_transfer,
        "translate_px": args.translate,
        "second_look_px": args.second_look,
        "val_field_mitoses_per_mm2": args.field_density,
        "mosaic_side": args.mosaic,
        "scale_step": _scale_step(args),
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.tune_threshold:
        overrides["val_score_threshold"] = None
    if args.resume:
        from midog_viewer.train import saved_recipe

        base = saved_recipe(args.resume).to_dict()
        return recipe_cls.from_dict({**base, **overrides})
    if args.points is not None:  # crops: never enlarge them to a patch; judge them as fields
        from midog_viewer.train.validate import REFERENCE_MITOSES_PER_MM2

        overrides.setdefault("relative_scales", True)
        overrides.setdefault("mosaic_side", 512)
        overrides.setdefault("val_field_mitoses_per_mm2", REFERENCE_MITOSES_PER_MM2)
    return recipe_cls(**overrides)


def _source_repeats(values: list[str]) -> dict[str, int] | None:
    """``--repeat SOURCE=K`` options as the recipe's source repeats (None when none is given)."""
    if not values:
        return None
    from midog_viewer.errors import TrainingError

    repeats: dict[str, int] = {}
    for value in values:
        source, sep, times = value.rpartition("=")
        if not sep or not source.strip() or not times.strip().isdigit():
            raise TrainingError(f"--repeat takes SOURCE=K with K a whole number, not {value!r}.")
        repeats[source.strip()] = int(times)
    return repeats


def _scale_step(args: argparse.Namespace) -> int | None:
    """``--scale-jitter`` as the recipe's scale step: its outermost scales are the patch size × (1 ± F)."""
    if args.scale_jitter is None:
        return None
    from midog_viewer.errors import TrainingError
    from midog_viewer.train.recipe import Recipe

    if not 0.0 < args.scale_jitter < 0.9:
        raise TrainingError(f"the scale jitter must lie in (0, 0.9), not {args.scale_jitter}.")
    patch = args.patch_size or Recipe.patch_size
    return max(1, round(patch * args.scale_jitter / Recipe.scales_each_side))
