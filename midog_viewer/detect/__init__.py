"""The Cascade R-CNN mitosis detector in PyTorch + torchvision (no mmdet at run time, no Qt, no napari).

``build_cascade_rcnn(CascadeConfig.named("tiny"))`` gives a trainable model; :func:`load_model` reads our
safetensors checkpoints and MMDetection 3.x ``.pth`` files;
:class:`Detector` runs a model over slide regions (tiles, stain normalisation, seam merging).
"""

from midog_viewer.detect.checkpoint import ModelInfo, load_model, save_checkpoint
from midog_viewer.detect.config import CascadeConfig
from midog_viewer.detect.detections import Detections
from midog_viewer.detect.engine import DEMO_MODEL_PATH, DetectionProgress, Detector
from midog_viewer.detect.model import CascadeRCNN, build_cascade_rcnn

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
