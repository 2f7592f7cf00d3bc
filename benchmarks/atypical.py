"""Atypical classifier: validation balanced accuracy and AUROC per source, and crops per second on the CPU.

Scores the validation split of ``train-atypical`` (same rule, the detector's: whole slides within each source,
so AMi-Br only, AtNorM-MD having no slides stays in training; same ``--val-fraction`` and ``--seed``) with
``classify_files``, as ``classify-atypical`` runs. That split is a validation only of a model trained with it:
the shipped model was trained on the earlier split (AMi-Br slides by a seeded SHA-1 hash of "source|slide",
AtNorM-MD crops one by one), so ``--split shipped`` scores the AMi-Br slides that split held out, the crops it
never trained on.
Speed: crops/s of reading + resampling alone (the baseline), of the whole call with and without the 8-view
test-time augmentation, and their ratios to the baseline. Prints one JSON document.

    python benchmarks/atypical.py                       # the shipped model, ../shared/data/real_mitosis
    python benchmarks/atypical.py --split shipped        # the shipped model on slides it never saw
    python benchmarks/atypical.py --model RUN/model.safetensors --threads 1
    python benchmarks/atypical.py --model RUN/model.safetensors --data HELD_OUT --split all   # every crop there

``--split all`` scores every crop of ``--data``: a source the model was not trained on, for an out-of-domain
figure (the card's AMi-Br-only run scored on AtNorM-MD).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midog_viewer.atypical.classify import classify_files  # noqa: E402
from midog_viewer.atypical.data import labelled_crops, load_crop, split_crops  # noqa: E402
from midog_viewer.atypical.metrics import summary  # noqa: E402
from midog_viewer.atypical.model import load_classifier  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_mitosis"


def _shipped_hash(group: str, seed: int) -> float:
    """The earlier split's draw (train-atypical before the shared split rule): a slide validates below the fraction."""
    digest = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="classifier .safetensors (default: the shipped one)")
    parser.add_argument("--data", default=str(DATA), help="real_mitosis-style folder")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--split", choices=("current", "shipped", "all"), default="current",
                        help="current: train-atypical's split; shipped: the AMi-Br slides the shipped model's split "
                             "held out; all: every crop of --data (a source the model never trained on)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    model, provenance = load_classifier(args.model)
    crops = labelled_crops(root)
    if args.split == "shipped":
        val = [c for c in crops if c.slide and _shipped_hash(f"{c.source}|{c.slide}", args.seed) < args.val_fraction]
    elif args.split == "all":
        val = crops
    else:
        _, val = split_crops(crops, args.val_fraction, args.seed)
    files = [root / c.file for c in val]
    # crops/s of what a call must do anyway: decode, resample to the model's spacing, centre crop
    t0 = time.perf_counter()
    for crop, path in zip(val, files):
        load_crop(path, crop.mpp, model.config.input_px, model.config.mpp)
    read_s = time.perf_counter() - t0
    timings, rows = {}, None
    for tta in (False, True):
        model.config = dataclasses.replace(model.config, tta=tta)
        t0 = time.perf_counter()
        # per-file spacing as train-atypical used it (classify-atypical takes one --mpp for all files)
        out = []
        for mpp in sorted({c.mpp for c in val}, key=lambda m: (m is None, m)):
            part = [f for c, f in zip(val, files) if c.mpp == mpp]
            out += classify_files(part, mpp=mpp, model=model)
        timings[tta] = time.perf_counter() - t0
        if tta:
            rows = {r["file"]: r["p_atypical"] for r in out}
    scores = [rows[str(f)] for f in files]
    figures = summary([c.atypical for c in val], scores, [c.source for c in val], model.config.threshold)
    n = len(files)
    print(json.dumps({
        "model": str(args.model or "shipped"),
        "split": args.split,
        "threshold": model.config.threshold,
        "validation": figures,
        "speed": {
            "crops": n, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
            "read_resample_crops_per_s (baseline)": round(n / read_s, 1),
            "classify_no_tta_crops_per_s": round(n / timings[False], 1),
            "classify_tta8_crops_per_s": round(n / timings[True], 1),
            "ratio_no_tta_to_baseline": round(read_s / timings[False], 3),
            "ratio_tta8_to_baseline": round(read_s / timings[True], 3),
        },
        "trained_by": provenance.get("trained_by"),
    }, indent=1))


if __name__ == "__main__":
    main()
