"""Train the demo model: the ``tiny`` configuration on synthetic H&E fields, scored on a held-out synthetic set.

Writes ``resources/models/demo-tiny.safetensors`` and its model card ``demo-tiny.md`` (data, recipe,
scores) and prints the held-out MIDOG figures as JSON. The model has only ever seen synthetic figures:
it is for trying the workflow, not for diagnosis.

    python benchmarks/train_demo_model.py --run /tmp/demo-run --threads 1

Resumable: run it again with the same ``--run`` and it continues from the saved state.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "resources" / "models"
#: Held-out fields use seeds far from the training ones.
HELD_OUT_SEED = 100_000
MAX_MODEL_BYTES = 25 * 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="/tmp/midog-demo-run", help="run folder (resumed if it exists)")
    parser.add_argument("--images", type=int, default=80, help="synthetic training+validation fields")
    parser.add_argument("--size", type=int, default=512, help="side of each training field (px)")
    parser.add_argument("--patch", type=int, default=128, help="training patch side (px)")
    parser.add_argument("--random-patches", type=int, default=0,
                        help="patches per field per epoch at random positions (background)")
    parser.add_argument("--tune-threshold", action="store_true",
                        help="choose the operating score threshold on the validation fields each epoch")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="fields held back for validation")
    parser.add_argument("--rcnn-samples", type=int, default=64, help="RoIs sampled per patch for the heads")
    parser.add_argument("--rpn-proposals", type=int, default=200, help="RPN proposals kept per patch")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--decay", type=int, nargs="*", default=[5], help="epochs after which lr is x0.1")
    parser.add_argument("--held-out", type=int, default=20, help="held-out synthetic fields (1024 px) to score")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not copy the model into resources/")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from midog_viewer.detect import load_model
    from midog_viewer.train import DataSpec, Recipe, read_progress, train
    from midog_viewer.train.sources import synthetic_images
    from midog_viewer.train.validate import midog_scores, predict_images

    run_dir = Path(args.run)
    data = DataSpec(synthetic=args.images, synthetic_size=args.size, val_fraction=args.val_fraction)
    recipe = Recipe(
        epochs=args.epochs,
        lr=args.lr,
        warmup_steps=args.warmup,
        lr_decay_epochs=tuple(args.decay),
        patch_size=args.patch,
        random_patches_per_image=args.random_patches,
        rcnn_samples=args.rcnn_samples,
        rpn_train_proposals=args.rpn_proposals,
        log_every=5,
        keep_epoch_checkpoints=2,
        val_score_threshold=None if args.tune_threshold else 0.5,
    )
    resume = run_dir if (run_dir / "state.pt").is_file() else None
    result = train(data, run_dir, config="tiny", recipe=recipe, resume=resume)
    if result.status != "done":
        print(json.dumps({"status": result.status, "run": str(run_dir)}))
        return 1

    model, info = load_model(result.best_checkpoint)
    held_out = synthetic_images(args.held_out, HELD_OUT_SEED, 1024)
    started = time.monotonic()
    predictions = predict_images(model, held_out)
    operating = float(info.config.score_threshold)  # chosen on the validation fields with --tune-threshold
    thresholds = sorted({0.3, 0.5, 0.7, operating})
    scores = {thr: midog_scores(held_out, predictions, thr) for thr in thresholds}
    eval_s = time.monotonic() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    figures = {
        "held_out_images": len(held_out),
        "held_out_mitoses": int(sum(im.n_mitoses for im in held_out)),
        "held_out": {str(k): v for k, v in scores.items()},
        "operating_threshold": operating,
        "held_out_f1": scores[operating]["f1"],
        "val_f1": metrics["val_f1"],
        "best_epoch": metrics["best_epoch"],
        "steps": result.step,
        "train_wall_s": round(training_seconds(read_progress(run_dir)), 1),
        "train_segments": sum(1 for e in read_progress(run_dir) if e["event"] == "start" and e["step"] < result.step),
        "held_out_eval_s": round(eval_s, 1),
        "threads": args.threads,
    }
    print(json.dumps(figures, indent=2))
    if not args.no_write:
        size = result.best_checkpoint.stat().st_size
        if size > MAX_MODEL_BYTES:
            print(f"model is {size} bytes, over the 25 MB limit; not written", file=sys.stderr)
            return 1
        MODEL_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.best_checkpoint, MODEL_DIR / "demo-tiny.safetensors")
        (MODEL_DIR / "demo-tiny.md").write_text(model_card(args, recipe, metrics, figures, size), encoding="utf-8")
    return 0


def training_seconds(events: list[dict]) -> float:
    """Wall time spent training over every (resumed) segment of the run, from its progress lines."""
    total, segment_start, last = 0.0, None, None
    for event in events:
        if event["event"] == "start":
            if segment_start is not None:
                total += last - segment_start
            segment_start = event["time"]
        last = event["time"]
    return total + (last - segment_start if segment_start is not None else 0.0)


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that trains this model again (run folder and threads left to the user)."""
    options = [f"--images {args.images}", f"--size {args.size}", f"--patch {args.patch}",
               f"--random-patches {args.random_patches}", f"--val-fraction {args.val_fraction}",
               f"--rcnn-samples {args.rcnn_samples}", f"--rpn-proposals {args.rpn_proposals}",
               f"--epochs {args.epochs}", f"--lr {args.lr}", f"--warmup {args.warmup}",
               "--decay " + " ".join(str(d) for d in args.decay)]
    if args.tune_threshold:
        options.append("--tune-threshold")
    return "python benchmarks/train_demo_model.py " + " ".join(options) + " --run RUN_DIR"


def model_card(args: argparse.Namespace, recipe, metrics: dict, figures: dict, size: int) -> str:
    """The model card: what the demo model is, what it saw, how it was trained and how it scores."""
    operating = figures["operating_threshold"]
    rows = "\n".join(
        f"| {thr}{' (operating point)' if float(thr) == operating else ''} | {s['tp']} | {s['fp']} | {s['fn']} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} |"
        for thr, s in figures["held_out"].items()
    )
    return f"""# demo-tiny: a small mitosis detector trained on synthetic figures

**Trained on synthetic H&E fields only. It is for trying the review workflow, not for diagnosis.**
It has never seen a real slide; its scores on real tissue mean nothing.

- File: `demo-tiny.safetensors` ({size / 1e6:.1f} MB), midog-viewer checkpoint format (config in the header).
- Architecture: Cascade R-CNN, preset `tiny` (ResNet-18 without its last stage, 64-channel FPN P2-P6,
  three cascade stages at IoU 0.5/0.6/0.7), classes "mitotic figure" and "hard negative", trained from scratch.
- Data: {args.images} synthetic fields of {args.size} x {args.size} px at 0.25 um/px from
  `midog_viewer.synthetic.make_hpf` (seeds 0-{args.images - 1}): mitotic figures in four phases and
  look-alike imposters (pyknotic, apoptotic, hyperchromatic nuclei) labelled "hard negative".
  Split by image: {metrics['train_images']} training fields ({metrics['train_mitoses']} mitoses,
  {metrics['train_hard_negatives']} hard negatives), {metrics['val_images']} validation fields.
- Recipe (`midog_viewer.train.Recipe`): Macenko stain normalisation; {recipe.patch_size} px patches around
  labelled objects and {recipe.random_patches_per_image} per field at random positions (the ordinary tissue the
  model must stay quiet on); flips, random crop keeping >= {recipe.min_crop_visible} of each box, scales
  {list(recipe.scales)} px, colour/contrast jitter; SGD lr {recipe.lr}, momentum {recipe.momentum}, weight decay
  {recipe.weight_decay}, linear warm-up {recipe.warmup_steps} steps from ratio {recipe.warmup_ratio}, lr x0.1
  after epoch(s) {list(recipe.lr_decay_epochs)}, gradient clipping at norm {recipe.grad_clip_norm}, batch
  {recipe.batch_size}, {recipe.rcnn_samples} RoIs and {recipe.rpn_train_proposals} RPN proposals sampled per patch
  (fewer than the preset, to fit a CPU), {recipe.epochs} epochs ({figures['steps']} steps), CPU, {figures['threads']} thread(s),
  {figures['train_wall_s'] / 60:.0f} min in {figures['train_segments']} sitting(s) (a resumed run continues from its saved state). Best epoch by validation F1: {figures['best_epoch']}
  (validation F1 {figures['val_f1']:.3f}).

## Scores (MIDOG metric: hit within 7.5 um, only "mitotic figure" detections count)

Operating point: score >= {operating}, {"chosen as the threshold with the best F1 on the validation fields" if args.tune_threshold else "the fixed default"};
the checkpoint records it, so `midog-viewer detect` and the review dock start from it. **Held-out F1 at the
operating point: {figures['held_out_f1']:.3f}.**

Held-out set: {figures['held_out_images']} synthetic fields of 1024 x 1024 px (seeds {HELD_OUT_SEED}-
{HELD_OUT_SEED + figures['held_out_images'] - 1}, never used in training), {figures['held_out_mitoses']} mitotic
figures, run through the detector's own engine (`Detector`: Macenko fitted per field, 512 px tiles with 64 px
overlap, seams merged), so these are the figures `midog-viewer detect` gives on such fields.

| score threshold | TP | FP | FN | precision | recall | F1 |
|---|---|---|---|---|---|---|
{rows}

Reproduce: `{reproduce_command(args)}` (a second call with the same `--run` resumes the run, e.g. with more
`--epochs`).
"""


if __name__ == "__main__":
    raise SystemExit(main())
