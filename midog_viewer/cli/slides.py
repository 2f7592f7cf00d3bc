"""``midog-viewer open PATH…`` (no PATH: the synthetic sample) and ``midog-viewer info PATH [--json]``."""

from __future__ import annotations

import argparse
import json

from midog_viewer.io import open_slide


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``open`` and ``info`` sub-commands."""
    opener = subparsers.add_parser(
        "open",
        help="open slides in napari (no PATH: the built-in synthetic sample)",
        description="Open whole-slide images or HPF TIFFs in napari as lazy pyramids. "
        "With no PATH, opens the built-in synthetic H&E sample.",
    )
    opener.add_argument("paths", nargs="*", metavar="PATH", help="SVS, NDPI, (OME-)TIFF, PNG, JPEG, or a DICOM folder/file")
    opener.set_defaults(func=open_command)

    info = subparsers.add_parser(
        "info",
        help="print a slide's format, pixel size, tile size and levels",
        description="Print a slide's format, µm per pixel, level-0 tile size and pyramid levels.",
    )
    info.add_argument("path", metavar="PATH", help="a slide file, or a DICOM folder")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=info_command)


def open_command(args: argparse.Namespace) -> int:
    """Check every path opens (bad ones fail here, before any window), then run napari on them."""
    for path in args.paths:
        open_slide(path).close()
    from midog_viewer._qt.viewer import run_viewer  # Qt and napari load only now: `--help` stays fast

    run_viewer(args.paths)
    return 0


def format_summary(summary: dict) -> str:
    """The text form of :meth:`~midog_viewer.io.Slide.summary`."""
    mpp = f"{summary['mpp']:g} µm/px" if summary["mpp"] is not None else "unknown"
    tile = "{} × {}".format(*summary["tile"]) if summary["tile"] else "none (strips or untiled)"
    lines = [f"path:    {summary['path']}", f"format:  {summary['format']}", f"mpp:     {mpp}", f"tile:    {tile}", "levels:"]
    for index, level in enumerate(summary["levels"]):
        lines.append(f"  {index}: {level['width']} × {level['height']}  (downsample {level['downsample']:.4g})")
    return "\n".join(lines)


def info_command(args: argparse.Namespace) -> int:
    """Print the slide's summary as text or JSON."""
    with open_slide(args.path) as slide:
        summary = slide.summary()
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0
