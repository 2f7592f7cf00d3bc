"""Write a copy of a checkpoint with another operating threshold, saying in its provenance how it was chosen.

How the shipped real-tiny got 0.85 (see its model card):

    python scripts/set_threshold.py RUN2/best.safetensors resources/models/real-tiny.safetensors 0.85 "why"
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midog_viewer.detect.checkpoint import load_model, save_checkpoint  # noqa: E402
from midog_viewer.errors import MidogError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="our .safetensors checkpoint")
    parser.add_argument("target", help="where the copy goes")
    parser.add_argument("threshold", type=float, help="the new operating threshold (0..1)")
    parser.add_argument("why", help="what it was chosen on (recorded in the checkpoint)")
    args = parser.parse_args()
    if not 0.0 < args.threshold < 1.0:
        print(f"the threshold must lie between 0 and 1, not {args.threshold}", file=sys.stderr)
        return 2
    try:
        model, info = load_model(args.source)
    except MidogError as exc:
        print(exc, file=sys.stderr)
        return 2
    provenance = {**info.provenance, "operating_threshold": {"value": args.threshold, "chosen_on": args.why}}
    save_checkpoint(model, args.target, dataclasses.replace(info.config, score_threshold=args.threshold), provenance)
    print(f"{args.target}: operating threshold {args.threshold}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
