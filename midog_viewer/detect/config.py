"""The Cascade R-CNN architecture and its training/test settings as one small, JSON-serialisable object.

Defaults follow MMDetection's ``cascade-rcnn_r50_fpn_1x_coco.py`` so that an mmdet checkpoint maps onto the
same numbers; :meth:`CascadeConfig.named` gives the presets this project uses.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from midog_viewer.classes import CLASS_NAMES
from midog_viewer.errors import ModelError

#: torchvision constructors we accept as backbones, with their block type.
BACKBONES: dict[str, str] = {
    "resnet18": "basic",
    "resnet34": "basic",
    "resnet50": "bottleneck",
    "resnet101": "bottleneck",
    "resnext101_32x8d": "bottleneck",
    "resnext101_64x4d": "bottleneck",
}

#: Channels of each residual stage's output for the two block types.
STAGE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "basic": (64, 128, 256, 512),
    "bottleneck": (256, 512, 1024, 2048),
}


@dataclass
class CascadeConfig:
    """Everything needed to build a Cascade R-CNN and to run it the way mmdet does."""

    backbone: str = "resnet50"
    #: Residual stages used (3 drops ResNet's last stage; the FPN then max-pools to reach 5 levels).
    backbone_stages: int = 4
    #: Keep BatchNorm layers in eval mode (running statistics frozen) while training, as mmdet's norm_eval.
    norm_eval: bool = True
    #: Stages whose parameters are frozen in training (-1 none, 0 the stem, k the stem and stages 1..k).
    frozen_stages: int = 1
    fpn_channels: int = 256
    rpn_feat_channels: int = 256
    anchor_scales: tuple[float, ...] = (8.0,)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    roi_output_size: int = 7
    roi_sampling_ratio: int = 0
    roi_finest_scale: int = 56
    roi_strides: tuple[int, ...] = (4, 8, 16, 32)
    fc_channels: int = 1024
    class_names: tuple[str, ...] = CLASS_NAMES
    stage_iou_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7)
    stage_target_stds: tuple[tuple[float, float, float, float], ...] = (
        (0.1, 0.1, 0.2, 0.2),
        (0.05, 0.05, 0.1, 0.1),
        (0.033, 0.033, 0.067, 0.067),
    )
    stage_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    #: Normalisation on the 0..255 RGB scale and padding, as mmdet's DetDataPreprocessor.
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    pad_size_divisor: int = 32
    # RPN training: MaxIoUAssigner(0.7, 0.3, min_pos 0.3, low-quality matches), RandomSampler(256, 0.5).
    rpn_pos_iou: float = 0.7
    rpn_neg_iou: float = 0.3
    rpn_min_pos_iou: float = 0.3
    rpn_num_samples: int = 256
    rpn_pos_fraction: float = 0.5
    rpn_allowed_border: float = 0.0
    rpn_bbox_beta: float = 1.0 / 9.0
    # Proposals: training (rpn_proposal) and test settings.
    rpn_train_nms_pre: int = 2000
    rpn_train_max_per_img: int = 2000
    rpn_test_nms_pre: int = 1000
    rpn_test_max_per_img: int = 1000
    rpn_nms_iou: float = 0.7
    # R-CNN training: RandomSampler(512, 0.25) with ground truth added as proposals; smooth-L1 beta 1.
    rcnn_num_samples: int = 512
    rcnn_pos_fraction: float = 0.25
    rcnn_bbox_beta: float = 1.0
    # R-CNN test.
    test_score_thr: float = 0.05
    test_nms_iou: float = 0.5
    test_max_per_img: int = 100
    #: Operating point: detections scoring at least this are offered as candidates by default (``detect``'s
    #: --score-thr, the review dock's slider). Training may choose it on validation images; 0.5 otherwise.
    score_threshold: float = 0.5
    #: Pixel spacing (µm/px) of the images the model learnt from. The detector resamples tiles of a slide
    #: scanned at a clearly different spacing (a 20x slide at 0.5 µm/px) to it; None leaves tiles as read.
    #: 0.25 is MIDOG's 40x (0.23-0.25 µm/px), also assumed for mmdet checkpoints, which do not record it.
    mpp: float | None = 0.25
    #: Free-form note on where this configuration came from (e.g. the mmdet config file).
    source: str = field(default="midog-viewer", compare=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_stages(self) -> int:
        return len(self.stage_iou_thresholds)

    @property
    def block_type(self) -> str:
        return BACKBONES[self.backbone]

    def validate(self) -> None:
        """Raise :class:`ModelError` for settings the builder cannot honour."""
        if self.backbone not in BACKBONES:
            raise ModelError(f"unsupported backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}.")
        if self.backbone_stages not in (3, 4):
            raise ModelError(f"backbone_stages must be 3 or 4, not {self.backbone_stages}.")
        if len(self.anchor_strides) != 5 or len(self.roi_strides) != 4:
            raise ModelError("the FPN needs 5 anchor strides (P2-P6) and 4 RoI strides (P2-P5).")
        n = self.num_stages
        if len(self.stage_target_stds) != n or len(self.stage_loss_weights) != n:
            raise ModelError(f"the {n} cascade stages need {n} target_stds and {n} loss weights.")
        if self.num_classes < 1:
            raise ModelError("the model needs at least one class name.")
        if not (isinstance(self.score_threshold, (int, float)) and 0.0 <= self.score_threshold <= 1.0):
            raise ModelError(f"the model's score threshold must lie in [0, 1], not {self.score_threshold!r}.")
        if self.mpp is not None and not (isinstance(self.mpp, (int, float)) and 0 < self.mpp < 100):
            raise ModelError(f"the model's pixel spacing must be a positive number of µm/px, not {self.mpp!r}.")

    @classmethod
    def named(cls, name: str) -> CascadeConfig:
        """A preset: ``tiny`` (the CPU demo model), ``r50`` or ``x101-64x4d`` (the seed paper's architecture)."""
        presets = {
            # Small enough to train on two CPU cores and ship as a file of a few MB: ResNet-18 without its last
            # stage, 64-channel FPN and 128-wide heads, trainable BN (trained from scratch), fewer proposals.
            "tiny": dict(
                backbone="resnet18",
                backbone_stages=3,
                norm_eval=False,
                frozen_stages=-1,
                fpn_channels=64,
                rpn_feat_channels=64,
                fc_channels=128,
                rpn_train_nms_pre=1000,
                rpn_train_max_per_img=500,
                rpn_test_nms_pre=500,
                rpn_test_max_per_img=300,
                rcnn_num_samples=256,
                source="preset tiny",
            ),
            "r50": dict(backbone="resnet50", source="preset r50"),
            "x101-64x4d": dict(backbone="resnext101_64x4d", source="preset x101-64x4d"),
        }
        if name not in presets:
            raise ModelError(f"unknown model preset {name!r}; choose one of {', '.join(presets)}.")
        return cls(**presets[name])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CascadeConfig:
        """Build from :meth:`to_dict` output (lists become tuples); unknown fields are an error."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ModelError(f"model configuration has unknown fields: {', '.join(unknown)}.")
        values = {key: _as_tuples(value) for key, value in data.items()}
        try:
            return cls(**values)
        except TypeError as exc:
            raise ModelError(f"model configuration is malformed: {exc}.") from exc

    @classmethod
    def from_json(cls, text: str) -> CascadeConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"model configuration is not valid JSON: {exc}.") from exc
        if not isinstance(data, dict):
            raise ModelError("model configuration JSON must be an object.")
        return cls.from_dict(data)


def _as_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value
