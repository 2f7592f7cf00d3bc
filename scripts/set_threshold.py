"""Write a copy of a checkpoint with another operating threshold (and, if asked, a second look), saying in its
provenance how they were chosen. The weights are copied unchanged.

How the shipped real-tiny got its operating point (see its model card):

    python scripts/set_threshold.py RUN4B/epoch_001.safetensors resources/models/real-tiny.safetensors 0.80 "why" \
        --second-look 256 --second-look-floor 0.2
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
    parser.add_argument("--second-look", type=int, metavar="PX",
                        help="window side of the second look (midog_viewer.detect.second_look; 0: none; default: kept)")
    parser.add_argument("--second-look-floor", type=float, metavar="S",
                        help="candidates scoring below this are not looked at again (default: kept)")
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
    changes = {"score_threshold": args.threshold}
    if args.second_look is not None:
        changes["second_look_px"] = args.second_look
    if args.second_look_floor is not None:
        changes["second_look_floor"] = args.second_look_floor
    try:
        config = dataclasses.replace(info.config, **changes)
    except MidogError as exc:
        print(exc, file=sys.stderr)
        return 2
    if config.second_look_px:
        provenance["second_look"] = {"side_px": config.second_look_px, "floor": config.second_look_floor}
    save_checkpoint(model, args.target, config, provenance)
    second = ""
    if config.second_look_px:
        second = f", second look {config.second_look_px} px from {config.second_look_floor}"
    print(f"{args.target}: operating threshold {args.threshold}{second}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
