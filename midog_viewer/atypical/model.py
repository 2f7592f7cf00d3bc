"""The normal/atypical mitosis classifier: a compact ResNet, its config, and its safetensors checkpoint.

The checkpoint is one ``.safetensors`` file whose header holds the config JSON (architecture, input size,
pixel spacing, normalisation, operating threshold); it is validated before the network is built, and the
weights are loaded strictly (see :func:`midog_viewer.detect.checkpoint.load_weights`). No code is ever read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midog_viewer.classes import SUBTYPE_NAMES
from midog_viewer.errors import ModelError

FORMAT_NAME = "midog-viewer/atypical-classifier"
FORMAT_VERSION = "1"
#: Where the shipped model lies (under ``resources/``).
DEFAULT_MODEL = ("models", "atypical-resnet.safetensors")


@dataclass(frozen=True)
class AtypicalConfig:
    """Everything needed to build the network and to feed it: crop side, spacing, normalisation, threshold."""

    input_px: int = 80  # side of the square crop the network sees
    mpp: float = 0.25  # µm per pixel of that crop
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels of each ResNet stage (stages 2.. halve the size)
    blocks: tuple[int, ...] = (1, 1, 2, 1)  # basic blocks per stage
    dropout: float = 0.2
    pixel_mean: tuple[float, float, float] = (0.74, 0.53, 0.75)  # RGB in 0..1
    pixel_std: tuple[float, float, float] = (0.17, 0.20, 0.13)
    threshold: float = 0.5  # p_atypical at or above it is called atypical (chosen on validation)
    tta: bool = True  # average over the 8 rotations/flips at inference
    class_names: tuple[str, str] = SUBTYPE_NAMES

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.input_px, int) or not 16 <= self.input_px <= 512:
            problems.append(f"input_px {self.input_px!r} is not an integer in 16..512")
        if not isinstance(self.mpp, (int, float)) or not 0.05 <= float(self.mpp) <= 5.0:
            problems.append(f"mpp {self.mpp!r} is not a pixel spacing in 0.05..5 µm")
        if not self.widths or len(self.widths) != len(self.blocks) or len(self.widths) > 6:
            problems.append("widths and blocks must be two lists of the same length (1..6)")
        if any(not isinstance(w, int) or not 1 <= w <= 1024 for w in self.widths):
            problems.append(f"widths {self.widths!r} must be integers in 1..1024")
        if any(not isinstance(b, int) or not 1 <= b <= 8 for b in self.blocks):
            problems.append(f"blocks {self.blocks!r} must be integers in 1..8")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout {self.dropout!r} is not in [0, 1)")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or any(s <= 0 for s in self.pixel_std):
            problems.append("pixel_mean and pixel_std must be three numbers, std > 0")
        if not isinstance(self.threshold, (int, float)) or not 0.0 <= float(self.threshold) <= 1.0:
            problems.append(f"threshold {self.threshold!r} is not in [0, 1]")
        if tuple(self.class_names) != SUBTYPE_NAMES:
            problems.append(f"class_names {list(self.class_names)} are not {list(SUBTYPE_NAMES)}")
        if problems:
            raise ModelError(f"invalid atypical-classifier config: {'; '.join(problems)}.")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> AtypicalConfig:
        if not isinstance(data, dict):
            raise ModelError("the atypical-classifier config is not a JSON object.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown atypical-classifier config field(s): {', '.join(unknown)}.")
        values = {}
        for key, value in data.items():
            values[key] = tuple(value) if isinstance(value, list) else value
        try:
            return cls(**values)
        except TypeError as exc:
            raise ModelError(f"invalid atypical-classifier config: {exc}.") from exc

    @classmethod
    def from_json(cls, text: str) -> AtypicalConfig:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ModelError(f"the atypical-classifier config is not valid JSON: {exc}.") from exc
        return cls.from_dict(data)


class _Block(nn.Module):
    """ResNet basic block (two 3x3 convolutions and a shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


class AtypicalNet(nn.Module):
    """Compact ResNet: 3x3 stem at full resolution, stages that halve the size, global pooling, one logit."""

    def __init__(self, cfg: AtypicalConfig) -> None:
        super().__init__()
        self.config = cfg
        self.register_buffer("mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(nn.Conv2d(3, cfg.widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(cfg.widths[0]),
                                  nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = cfg.widths[0]
        for width, n in zip(cfg.widths, cfg.blocks):
            for i in range(n):
                layers.append(_Block(cin, width, 2 if i == 0 else 1))
                cin = width
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, 3, S, S) float RGB in 0..1 → (N,) logits of "atypical"."""
        x = (x - self.mean) / self.std
        x = self.body(self.stem(x))
        return self.head(self.drop(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))[:, 0]


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations and flips of a batch (a mitosis has no orientation)."""
    out = []
    for flip in (False, True):
        base = torch.flip(x, dims=(-1,)) if flip else x
        out.extend(torch.rot90(base, k, dims=(-2, -1)) for k in range(4))
    return out


@torch.no_grad()
def predict_proba(model: AtypicalNet, crops: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
    """p_atypical of (N, 3, S, S) float crops in 0..1; with ``tta`` the mean over the 8 dihedral views."""
    model.eval()
    tta = model.config.tta if tta is None else tta
    views = dihedral(crops) if tta else [crops]
    return torch.stack([torch.sigmoid(model(v)) for v in views]).mean(0)


def save_classifier(model: AtypicalNet, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write the weights and, in the header, the config and provenance (JSON); atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelError(f"checkpoint path {path} must end in .safetensors.")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "class_names": json.dumps(list(model.config.class_names)),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def with_threshold(model: AtypicalNet, threshold: float) -> AtypicalNet:
    """The same network with another operating threshold recorded in its config."""
    from dataclasses import replace

    model.config = replace(model.config, threshold=float(threshold))
    return model


def shipped_model_path() -> Path:
    """The file of the classifier midog-viewer ships (what detections are scored with by default)."""
    from midog_viewer._resources import resource_path

    return resource_path(*DEFAULT_MODEL)


def load_classifier(path: str | Path | None = None) -> tuple[AtypicalNet, dict[str, Any]]:
    """Load a classifier checkpoint (the shipped one when ``path`` is None): model in eval mode, provenance."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    from midog_viewer.detect.checkpoint import load_weights

    path = Path(path) if path is not None else shipped_model_path()
    if not path.is_file():
        raise ModelError(f"atypical model file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path} as safetensors: {exc}.") from exc
    if metadata.get("format") != FORMAT_NAME:
        raise ModelError(f"{path} is not a midog-viewer atypical-classifier checkpoint (no such config in its header).")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path} has atypical-classifier format version {metadata.get('format_version')!r}, "
                         f"this midog-viewer reads {FORMAT_VERSION}.")
    cfg = AtypicalConfig.from_json(metadata.get("config", ""))
    try:
        provenance = json.loads(metadata.get("provenance", "{}"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} has malformed provenance JSON: {exc}.") from exc
    model = AtypicalNet(cfg)
    load_weights(model, state, str(path))
    return model.eval(), provenance
