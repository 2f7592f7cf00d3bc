"""``midog-viewer demo``: the scripted review demo (and the README screenshot)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="open the synthetic sample with the demo model, detect, accept one and reject one detection",
        description="Open the synthetic sample with the built-in demo model, detect the visible region, accept "
        "one and reject one detection; with --screenshot, save the whole window to PATH and exit.",
    )
    parser.add_argument("--screenshot", metavar="PATH", help="save a screenshot of the whole window here and exit")
    parser.add_argument("--db", metavar="DB", help="review database for the demo's decisions (default: a temporary one)")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from midog_viewer._qt.demo import run_demo

    return run_demo(args.screenshot, args.db)
