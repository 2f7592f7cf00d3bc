"""napari's OpenGL context and the one library that must load before it: triton (the one home of the workaround).

triton and Mesa's llvmpipe each bring their own LLVM; loaded in the wrong order, the process segfaults.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from qtpy.QtCore import QCoreApplication


def load_triton_before_opengl() -> None:
    """Import triton (shipped with CUDA builds of torch) before napari creates its OpenGL context.

    triton and Mesa's llvmpipe each bring their own LLVM; when torch imports triton lazily after the GL
    context exists (on first use of ``torchvision.ops``, e.g. by the review dock's detector) the process
    segfaults. Loaded first, both work. See :func:`keep_triton_out` for a viewer started some other way.
    """
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


def keep_triton_out() -> None:
    """Make ``import triton`` fail (ImportError) unless it was loaded before napari's OpenGL context.

    When the dock is opened from a napari started some other way it is too late for
    :func:`load_triton_before_opengl`, so torch carries on without triton, which eager inference does not need.
    """
    if "triton" not in sys.modules and QCoreApplication.instance() is not None:  # no Qt yet: nothing to fear
        sys.modules["triton"] = None
