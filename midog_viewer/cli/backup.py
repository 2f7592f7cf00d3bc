"""The ``backup`` sub-command: a current, consistent copy of a review database, safe while it is open."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``backup`` to the ``midog-viewer`` command."""
    p = subparsers.add_parser(
        "backup", help="copy a review database safely, even while it is open (SQLite's online backup)"
    )
    p.add_argument("--db", type=Path, required=True, help="review database to copy (only read)")
    p.add_argument("--out", type=Path, required=True,
                   help="backup file to write; an older backup there is replaced atomically")
    p.set_defaults(func=_backup)


def _backup(args: argparse.Namespace) -> int:
    from midog_viewer.review.backup import backup_store

    summary = backup_store(args.db, args.out)
    print(f"backed up {summary.slides} slides and {summary.decisions:,} decisions to {summary.path} "
          f"({summary.size_bytes:,} bytes)")
    return 0
