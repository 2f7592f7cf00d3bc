"""Shared test set-up: Qt on Xvfb, the real files in ../shared/data, small torch thread pools."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

# napari needs OpenGL: the offscreen platform has none, so GUI tests run on Xvfb (pytest-xvfb starts it).
os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

# torch's CUDA build pulls in triton (through torchvision.ops), which loads its own LLVM; once Mesa's llvmpipe
# has loaded another inside napari's OpenGL context, that import segfaults. Loading triton first avoids it.
try:  # pragma: no cover - depends on the torch build
    import triton  # noqa: F401
except ImportError:
    pass

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real files (slides, annotations, mmdet reference); tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test files not found at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _few_torch_threads():
    """Two cores here: keep torch from oversubscribing them when tests run beside other work."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(min(2, os.cpu_count() or 1))



@pytest.fixture
def full_device(tmp_path):
    """A character device like /dev/full: as root a clone in tmp_path (so a regression cannot replace the real
    one), as a user /dev/full itself (which only root could replace)."""
    if os.geteuid() != 0:
        return Path("/dev/full")
    device = tmp_path / "full-device"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    return device
