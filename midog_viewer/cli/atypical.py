"""``midog-viewer train-atypical`` and ``classify-atypical``: the normal/atypical mitosis classifier."""

from __future__ import annotations

import argparse
import json
import sys

from midog_viewer.cli.stopping import stop_on_signals
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train-atypical",
        help="train the normal/atypical mitotic-figure classifier on rated crops or reviewed subtypes",
        description="Train the atypical classifier on the rated crops of a real_mitosis-style folder (images.csv + "
        "objects.csv) and/or on the subtypes reviewers gave in review stores (--store: crops are cut from the "
        "slides into RUN_DIR/reviewed-crops; a model's call nobody confirmed is not a label), split by slide. "
        "With --store it fine-tunes the shipped classifier unless --init or --scratch says otherwise. Writes "
        "RUN_DIR/progress.jsonl, last.safetensors per epoch, state.pt, metrics.json and, at the end, "
        "model.safetensors with the threshold that maximises validation balanced accuracy. SIGTERM or Ctrl-C "
        "stops after the current step; --resume continues.",
    )
    train.add_argument("--data", metavar="DIR", help="folder with images.csv and objects.csv (not needed on --resume)")
    train.add_argument("--store", action="append", default=[], metavar="DB",
                       help="review store whose reviewed subtypes train (repeatable)")
    start = train.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="CKPT", help="classifier to fine-tune (default with --store: the shipped one)")
    start.add_argument("--scratch", action="store_true", help="train a new network, not a fine-tuned one")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    train.add_argument("--resume", metavar="RUN", help="continue the run saved in this folder")
    train.add_argument("--epochs", type=int, help="epochs in all (default 36, fine-tuning 10; on --resume, the saved "
                       "run's)")
    train.add_argument("--batch-size", type=int, help="crops per step (default 64)")
    train.add_argument("--lr", type=float, help="peak learning rate (default 0.002, fine-tuning 0.0005)")
    train.add_argument("--val-fraction", type=float, help="share of slides for validation (default 0.2)")
    train.add_argument("--seed", type=int, help="seed of the split, initialisation and augmentation (default 0)")
    train.add_argument("--limit", type=int, metavar="N", help="only the first N crops per source and class (trials)")
    train.add_argument("--log-every", type=int, metavar="STEPS", help="steps between progress lines (default 10)")
    train.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    train.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    train.add_argument("--json", action="store_true", help="print the result as JSON")
    train.set_defaults(func=handle_train)

    classify = subparsers.add_parser(
        "classify-atypical",
        help="p_atypical of crops centred on mitotic figures",
        description="Score image crops (or folders of them) centred on a mitotic figure at about 0.25 µm/px. "
        "Writes OUT.csv with file, p_atypical and atypical (0/1 at the model's threshold).",
    )
    classify.add_argument("paths", nargs="+", metavar="PATH", help="crop image or folder of crops")
    classify.add_argument("--model", metavar="CKPT", help="classifier .safetensors (default: the shipped model)")
    classify.add_argument("--mpp", type=float, metavar="UM", help="µm/px of the crops (default: the model's)")
    classify.add_argument("--out", required=True, metavar="OUT.csv", help="CSV to write")
    classify.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu", help="default cpu")
    classify.set_defaults(func=handle_classify)


def handle_train(args: argparse.Namespace) -> int:
    import torch

    from midog_viewer.atypical.model import shipped_model_path
    from midog_viewer.atypical.reviewed import train_on_stores
    from midog_viewer.atypical.train import FINE_TUNE_DEFAULTS, AtypicalRecipe, train_atypical
    from midog_viewer.errors import TrainingError

    if args.threads < 1:
        raise TrainingError("--threads must be at least 1.")
    torch.set_num_threads(args.threads)
    init = args.init or (shipped_model_path() if args.store and not args.scratch else None)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "val_fraction": args.val_fraction, "seed": args.seed, "log_every": args.log_every}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.resume:
        recipe = AtypicalRecipe(epochs=args.epochs) if args.epochs else None
        if set(overrides) - {"epochs"} or args.store or args.init or args.scratch:
            raise TrainingError("on --resume only --epochs can change; the data, start and other settings are the "
                                "saved run's.")
    else:
        recipe = AtypicalRecipe(**({**FINE_TUNE_DEFAULTS, **overrides} if init is not None else overrides))
    common = {"recipe": recipe, "device": args.device, "limit": args.limit,
              "echo": None if args.quiet else _print_event}
    with stop_on_signals() as stop:
        if args.store and not args.resume:
            result = train_on_stores(args.store, args.out, data=args.data, init=init, should_stop=stop, **common)
        else:
            result = train_atypical(args.data, args.out, resume=args.resume, init=init, should_stop=stop, **common)
    if args.json:
        print(json.dumps({"status": result.status, "run": str(result.run_dir), "epochs_done": result.epochs_done,
                          "step": result.step, "threshold": result.threshold, "validation": result.validation}))
    elif result.status == "cancelled":
        print(f"cancelled at step {result.step}; resume with --resume {result.run_dir}", file=sys.stderr)
    else:
        overall = result.validation["all"] if result.validation else {}
        print(f"done: validation balanced accuracy {overall.get('balanced_accuracy', 0):.4f}, AUROC "
              f"{overall.get('auroc') or 0:.4f} at threshold {result.threshold:.3f}; model {result.model_path}")
    return 0


def _print_event(event: dict[str, Any]) -> None:
    """One short line on stderr per progress event, as ``midog-viewer train`` prints them."""
    kind = event["event"]
    if kind == "start":
        line = (f"training on {event['train_crops']} crops ({event['train_atypical']} atypical), validating on "
                f"{event['val_crops']} ({event['val_atypical']} atypical); {event['total_steps']} steps on "
                f"{event['device']}")
    elif kind == "step":
        eta = event.get("eta_s")
        eta_text = f"{eta / 60:.0f} min" if eta is not None else "-"
        line = (f"step {event['step']}/{event['total_steps']}  epoch {event['epoch']:.2f}  loss {event['loss']:.4f}"
                f"  lr {event['lr']:.5f}  ETA {eta_text}")
    elif kind == "baseline":
        line = (f"the model fine-tuned, on this validation split: balanced accuracy "
                f"{event['val_balanced_accuracy']:.4f} at its threshold {event['threshold']:.3f}")
    elif kind == "epoch":
        auroc = event.get("val_auroc")
        line = (f"epoch {event['epoch']}: validation balanced accuracy {event['val_balanced_accuracy']:.4f}, "
                f"AUROC {auroc if auroc is None else round(auroc, 4)}")
    else:
        return
    print(line, file=sys.stderr, flush=True)


def handle_classify(args: argparse.Namespace) -> int:
    from midog_viewer.atypical.classify import classify_files, collect_images, csv_destination, write_csv

    csv_destination(args.out)
    files = collect_images(args.paths)
    rows = classify_files(files, model_path=args.model, mpp=args.mpp, device=args.device)
    write_csv(rows, args.out)
    n_atypical = sum(r["atypical"] for r in rows)
    print(f"{len(rows)} crops, {n_atypical} atypical, written to {args.out}")
    return 0
