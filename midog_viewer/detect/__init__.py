"""The Cascade R-CNN mitosis detector in PyTorch + torchvision (no mmdet at run time, no Qt, no napari).

``build_cascade_rcnn(CascadeConfig.named("tiny"))`` gives a trainable model; :func:`load_model` reads our
safetensors checkpoints and MMDetection 3.x ``.pth`` files;
:class:`Detector` runs a model over slide regions (tiles, stain normalisation, seam merging).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it. Loaded on first use, so that importing a light submodule
#: (``midog_viewer.detect.config`` for the preset names the CLI offers) does not import torch.
_EXPORTS = {
    "CascadeConfig": "config",
    "CascadeRCNN": "model",
    "DEMO_MODEL_PATH": "engine",
    "DetectionProgress": "engine",
    "Detections": "detections",
    "Detector": "engine",
    "ModelInfo": "checkpoint",
    "build_cascade_rcnn": "model",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
}

if TYPE_CHECKING:
    from midog_viewer.detect.checkpoint import ModelInfo, load_model, save_checkpoint
    from midog_viewer.detect.config import CascadeConfig
    from midog_viewer.detect.detections import Detections
    from midog_viewer.detect.engine import DEMO_MODEL_PATH, DetectionProgress, Detector
    from midog_viewer.detect.model import CascadeRCNN, build_cascade_rcnn


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CascadeConfig",
    "CascadeRCNN",
    "DEMO_MODEL_PATH",
    "DetectionProgress",
    "Detections",
    "Detector",
    "ModelInfo",
    "build_cascade_rcnn",
    "load_model",
    "save_checkpoint",
]
