"""The ``midog-viewer`` command: a thin skin over the core.

Each area registers its sub-commands in its own module (``slides``, ``detect``, ``review``, ``train``,
``gui``), so the command line is assembled here and nothing else lives in this file. Bad input raises
:class:`~midog_viewer.errors.MidogError`; :func:`main` prints it as one line on stderr and returns 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
import sys
from collections.abc import Sequence

from midog_viewer import __version__
from midog_viewer.errors import MidogError

#: Modules of ``midog_viewer.cli`` that contribute sub-commands through ``register(subparsers)``.
_COMMAND_MODULES = ("slides", "detect", "review", "backup", "train", "atypical", "batch", "gui")


_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|inf(?:inity)?|nan"
#: A value, not an option: "-0.25", "-inf", "-1e3" and lists such as "-100,0,512,512" (argparse knows only "-5").
_NEGATIVE_VALUE = re.compile(rf"^-(?:{_NUMBER})(?:\s*,\s*-?(?:{_NUMBER}))*$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) that takes negative numbers and lists as values."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE  # sub-commands are built by this class too

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"midog-viewer: error: {message} (see {self.prog} --help)\n")


def positive_number(text: str) -> float:
    """argparse type: a finite number above zero (sizes, areas, radii, pixel sizes)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="midog-viewer",
        description="Review mitotic-figure detections in whole-slide images. "
        "With no command, opens napari on the built-in synthetic sample.",
    )
    parser.add_argument("--version", action="version", version=f"midog-viewer {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"midog_viewer.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["open"])
    try:
        return int(args.func(args) or 0)
    except MidogError as exc:
        print(f"midog-viewer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("midog-viewer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
