"""The Cascade R-CNN architecture and its training/test settings as one small, JSON-serialisable object.

Defaults follow MMDetection's ``cascade-rcnn_r50_fpn_1x_coco.py`` so that an mmdet checkpoint maps onto the
same numbers; :meth:`CascadeConfig.named` gives the presets this project uses.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any

from midog_viewer.classes import CLASS_NAMES
from midog_viewer.errors import ModelError

#: Field overrides of the named presets (:meth:`CascadeConfig.named`).
_PRESETS: dict[str, dict[str, Any]] = {
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

#: The presets' names, in the order the CLI and the training panel offer them.
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)

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


#: Sane ranges of the architecture and its settings; mmdet's defaults and all our presets lie well inside.
#: They bound what a file can ask the builder for: the widest heads allowed come to about 300 M parameters.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "frozen_stages": (-1, 4),
    "fpn_channels": (1, 1024),
    "rpn_feat_channels": (1, 1024),
    "fc_channels": (1, 4096),
    "roi_output_size": (1, 32),
    "roi_sampling_ratio": (0, 16),
    "roi_finest_scale": (1, 4096),
    "pad_size_divisor": (1, 256),
    "rpn_num_samples": (1, 100_000),
    "rpn_train_nms_pre": (1, 100_000),
    "rpn_train_max_per_img": (1, 100_000),
    "rpn_test_nms_pre": (1, 100_000),
    "rpn_test_max_per_img": (1, 100_000),
    "rcnn_num_samples": (1, 100_000),
    "test_max_per_img": (1, 100_000),
    "second_look_px": (0, 2048),
}
_FLOAT_RANGES: dict[str, tuple[float, float]] = {
    **{name: (0.0, 1.0) for name in ("rpn_pos_iou", "rpn_neg_iou", "rpn_min_pos_iou", "rpn_pos_fraction",
                                     "rcnn_pos_fraction", "rpn_nms_iou", "test_score_thr", "test_nms_iou")},
    "rpn_allowed_border": (-1.0, 1e6),
    "rpn_bbox_beta": (0.0, 100.0),
    "rcnn_bbox_beta": (0.0, 100.0),
    "second_look_floor": (0.0, 1.0),
}
#: Number sequences: element kind, range and allowed lengths.
_SEQUENCES: dict[str, tuple[type, float, float, range]] = {
    "anchor_scales": (float, 1e-3, 1024.0, range(1, 9)),
    "anchor_ratios": (float, 1e-3, 1000.0, range(1, 9)),
    "anchor_strides": (int, 1, 1024, range(5, 6)),  # the FPN's 5 levels P2-P6
    "roi_strides": (int, 1, 1024, range(4, 5)),  # RoIs pool from P2-P5
    "stage_iou_thresholds": (float, 0.0, 1.0, range(1, 9)),
    "stage_loss_weights": (float, 0.0, 100.0, range(1, 9)),
    "pixel_mean": (float, -1e4, 1e4, range(3, 4)),
    "pixel_std": (float, 1e-6, 1e4, range(3, 4)),
}
MAX_CLASSES = 100


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
    #: Second look (:mod:`midog_viewer.detect.second_look`): the side, in model px, of the window on which each
    #: mitotic-figure candidate is scored again (0: no second look), and the score below which candidates are
    #: not looked at again. For models that learnt every figure at one place on their stride grid (crop mosaics).
    second_look_px: int = 0
    second_look_floor: float = 0.2
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
        """Raise :class:`ModelError` for settings the builder cannot honour or that are out of any sane range.

        Every number is checked before anything is built, so a hostile file cannot make the builder allocate
        a huge model (``fc_channels = 4000000`` would ask for 50 GB).
        """
        if not isinstance(self.backbone, str) or self.backbone not in BACKBONES:
            raise ModelError(f"unsupported backbone {_short(self.backbone)}; choose one of {', '.join(BACKBONES)}.")
        if self.backbone_stages not in (3, 4) or isinstance(self.backbone_stages, bool):
            raise ModelError(f"backbone_stages must be 3 or 4, not {_short(self.backbone_stages)}.")
        if not isinstance(self.norm_eval, bool):
            raise ModelError(f"norm_eval must be true or false, not {_short(self.norm_eval)}.")
        for name, (lo, hi) in _INT_RANGES.items():
            _check_number(name, getattr(self, name), int, lo, hi)
        for name, (lo, hi) in _FLOAT_RANGES.items():
            _check_number(name, getattr(self, name), float, lo, hi)
        for name, (kind, lo, hi, lengths) in _SEQUENCES.items():
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(values) not in lengths:
                raise ModelError(f"{name} must be a list of {_lengths(lengths)} numbers, not {_short(values)}.")
            for value in values:
                _check_number(name, value, kind, lo, hi)
        n = len(self.stage_iou_thresholds)
        if len(self.stage_target_stds) != n or len(self.stage_loss_weights) != n:
            raise ModelError(f"the {n} cascade stages need {n} target_stds and {n} loss weights.")
        for stds in self.stage_target_stds:
            if not isinstance(stds, tuple) or len(stds) != 4:
                raise ModelError(f"each stage's target_stds must be 4 numbers, not {_short(stds)}.")
            for value in stds:
                _check_number("stage_target_stds", value, float, 1e-6, 100.0)
        names = self.class_names
        if not (isinstance(names, tuple) and 1 <= len(names) <= MAX_CLASSES
                and all(isinstance(c, str) and 0 < len(c.strip()) <= 100 for c in names)):
            raise ModelError(
                f"class_names must be 1 to {MAX_CLASSES} non-empty names (text), not {_short(names)}."
            )
        if len(set(names)) != len(names):
            raise ModelError(f"class_names must be distinct, not {_short(names)}.")
        if not (_is_number(self.score_threshold) and 0.0 <= self.score_threshold <= 1.0):
            raise ModelError(f"the model's score threshold must lie in [0, 1], not {_short(self.score_threshold)}.")
        if self.mpp is not None and not (_is_number(self.mpp) and 0 < self.mpp < 100):
            raise ModelError(f"the model's pixel spacing must be a positive number of µm/px, not {_short(self.mpp)}.")
        if self.second_look_px % self.pad_size_divisor:
            raise ModelError(
                f"second_look_px must be a multiple of pad_size_divisor ({self.pad_size_divisor}), so that a window's"
                f" centre falls on the stride grid; not {self.second_look_px}."
            )
        if not isinstance(self.source, str):
            raise ModelError(f"the configuration's source must be text, not {_short(self.source)}.")

    @classmethod
    def named(cls, name: str) -> CascadeConfig:
        """A preset: ``tiny`` (the CPU demo model), ``r50`` or ``x101-64x4d`` (the seed paper's architecture)."""
        if name not in _PRESETS:
            raise ModelError(f"unknown model preset {name!r}; choose one of {', '.join(PRESET_NAMES)}.")
        return cls(**_PRESETS[name])

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
            if not isinstance(data, dict):
                raise ModelError("model configuration JSON must be an object.")
            return cls.from_dict(data)
        except json.JSONDecodeError as exc:
            raise ModelError(f"model configuration is not valid JSON: {exc}.") from exc
        except RecursionError:
            raise ModelError("model configuration JSON nests too deeply.") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(name: str, value: Any, kind: type, lo: float, hi: float) -> None:
    """``value`` is a finite number (an ``int`` where ``kind`` is int) within ``lo..hi``, or a ModelError."""
    ok = _is_number(value) and (kind is float or isinstance(value, int)) and lo <= value <= hi
    if not ok:
        what = "an integer" if kind is int else "a number"
        raise ModelError(f"{name} must be {what} in {lo:g}..{hi:g}, not {_short(value)}.")


def _lengths(lengths: range) -> str:
    return str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]} to {lengths[-1]}"


_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 4
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40


def _short(value: Any) -> str:
    """A repr short enough for one error line, whatever a file put there."""
    return _SHORT.repr(value)


def _as_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value
