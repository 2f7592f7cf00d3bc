"""Where the files we ship (demo model, stain reference) are: in the source tree or, from a wheel, under
``sys.prefix/share/midog-viewer`` (``pyproject.toml`` installs ``resources/`` there as data files)."""

from __future__ import annotations

import sys
from pathlib import Path

#: ``resources/`` beside the package: a checkout or an editable install.
SOURCE_RESOURCES = Path(__file__).resolve().parents[1] / "resources"
#: Where a wheel install puts them.
INSTALLED_RESOURCES = Path(sys.prefix) / "share" / "midog-viewer"


def resource_path(*parts: str, roots: tuple[Path, ...] = (SOURCE_RESOURCES, INSTALLED_RESOURCES)) -> Path:
    """The first existing ``root/parts`` over ``roots``; the source-tree path if none exists (for messages)."""
    for root in roots:
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    return roots[0].joinpath(*parts)
