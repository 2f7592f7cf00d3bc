"""The ``midog-viewer`` command: a thin skin over the core.

Each area registers its sub-commands in its own module (``slides``, ``detect``, ``review``, ``train``,
``gui``), so the command line is assembled here and nothing else lives in this file. Bad input raises
:class:`~midog_viewer.errors.MidogError`; :func:`main` prints it as one line on stderr and returns 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from midog_viewer import __version__
from midog_viewer.errors import MidogError

#: Modules of ``midog_viewer.cli`` that contribute sub-commands through ``register(subparsers)``.
_COMMAND_MODULES = ("slides", "detect", "review", "train", "gui", "batch")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to the usage line and one error line."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="midog-viewer",
        description="Review mitotic-figure detections in whole-slide images. "
        "With no command, opens napari on the built-in synthetic sample.",
    )
    parser.add_argument("--version", action="version", version=f"midog-viewer {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"midog_viewer.cli.{name}")
        except ModuleNotFoundError as exc:  # an area not built yet in this checkout
            if exc.name == f"midog_viewer.cli.{name}":
                continue
            raise
        module.register(subparsers)
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
