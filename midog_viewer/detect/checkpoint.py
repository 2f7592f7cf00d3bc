"""Our checkpoint format (one ``.safetensors`` file, config JSON in its header) and :func:`load_model`.

Loading never runs code from the file: safetensors holds only tensors and strings, and mmdet ``.pth`` files
are read as weights only and converted by :mod:`midog_viewer.detect.mmdet_import`. Nothing is built before
the configuration's numbers are within range and every tensor's shape matches the one it configures, so a
hostile header cannot make the builder allocate a huge model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midog_viewer.detect.config import CascadeConfig
from midog_viewer.detect.model import CascadeRCNN, build_cascade_rcnn
from midog_viewer.errors import ModelError

FORMAT_NAME = "midog-viewer/cascade-rcnn"
FORMAT_VERSION = "1"


@dataclass
class ModelInfo:
    """Where a loaded model came from: file, format, configuration and free-form provenance."""

    path: Path
    format: str  # "midog-safetensors" or "mmdet"
    config: CascadeConfig
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names


def save_checkpoint(model: nn.Module, path: str | Path, cfg: CascadeConfig, provenance: dict[str, Any]) -> Path:
    """Write the weights and, in the safetensors metadata, the config, class names, normalisation, provenance."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelError(f"checkpoint path {path} must end in .safetensors.")
    try:
        provenance_json = json.dumps(provenance, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"provenance must be JSON-serialisable: {exc}.") from exc
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_json(),
        "class_names": json.dumps(list(cfg.class_names)),
        "normalization": json.dumps(
            {"pixel_mean": list(cfg.pixel_mean), "pixel_std": list(cfg.pixel_std), "channel_order": "RGB",
             "pad_size_divisor": cfg.pad_size_divisor}
        ),
        "provenance": provenance_json,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


#: safetensors headers of our models are some 100 kB; the format itself would accept 100 MB of JSON.
MAX_HEADER_BYTES = 16 << 20


def expected_shapes(cfg: CascadeConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor the model of ``cfg`` has, found on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = build_cascade_rcnn(cfg)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_fits(cfg: CascadeConfig, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise one :class:`ModelError` naming the tensors that do not fit the model ``cfg`` describes."""
    _check_shapes(expected_shapes(cfg), shapes, source)


def _check_shapes(expected: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]], source: str) -> None:
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong_shape = sorted(
        f"{k} {shapes[k]} vs {expected[k]}" for k in set(expected) & set(shapes) if shapes[k] != expected[k]
    )
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ModelError(f"{source} does not fit the model architecture ({'; '.join(problems)}).")


def load_weights(model: CascadeRCNN, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` strictly; on any mismatch raise one :class:`ModelError` naming what does not fit."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_shapes(expected, {k: tuple(v.shape) for k, v in state_dict.items()}, source)
    model.load_state_dict(state_dict, strict=True)


def _load_safetensors(path: Path) -> tuple[CascadeRCNN, ModelInfo]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg, provenance, shapes = _read_header(path)
    check_fits(cfg, shapes, str(path))  # before a byte of the model or its weights is allocated
    try:
        state_dict = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path} as safetensors: {exc}.") from exc
    model = build_cascade_rcnn(cfg)
    load_weights(model, state_dict, str(path))
    return model.eval(), ModelInfo(path=path, format="midog-safetensors", config=cfg, provenance=provenance)


def read_config(path: str | Path) -> CascadeConfig:
    """The configuration of one of our ``.safetensors`` checkpoints, from its header alone (no weights
    read): e.g. its operating threshold, for counting what a recorded detection run found."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist.")
    return _read_header(path)[0]


def _read_header(path: Path) -> tuple[CascadeConfig, dict[str, Any], dict[str, tuple[int, ...]]]:
    """Configuration, provenance and tensor shapes from a checkpoint's header, refusing oversized headers."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    with path.open("rb") as handle:
        head = handle.read(8)
    if len(head) == 8 and int.from_bytes(head, "little") > MAX_HEADER_BYTES:
        raise ModelError(
            f"cannot read {path} as safetensors: its header would be over {MAX_HEADER_BYTES >> 20} MB "
            "(ours are some 100 kB)."
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path} as safetensors: {exc}.") from exc
    if metadata.get("format") != FORMAT_NAME:
        raise ModelError(f"{path} is a safetensors file but not a midog-viewer checkpoint (no config in its header).")
    cfg = CascadeConfig.from_json(metadata.get("config", ""))
    try:
        provenance = json.loads(metadata.get("provenance", "{}"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} has malformed provenance JSON: {exc}.") from exc
    return cfg, provenance, shapes


def _load_mmdet(path: Path, config_path: str | Path | None) -> tuple[CascadeRCNN, ModelInfo]:
    """Our model from an mmdet checkpoint and its config (or the config text in ``meta['cfg']``)."""
    from midog_viewer.detect import mmdet_import

    state_dict, meta = mmdet_import.read_runner_checkpoint(path)
    cfg, config_label = mmdet_import.mmdet_config(path, meta, config_path)
    converted = mmdet_import.convert_state_dict(state_dict, str(path))
    check_fits(cfg, {k: tuple(v.shape) for k, v in converted.items()}, str(path))
    model = build_cascade_rcnn(cfg)
    load_weights(model, converted, str(path))
    provenance = mmdet_import.mmdet_provenance(path, meta, config_label)
    return model.eval(), ModelInfo(path=path, format="mmdet", config=cfg, provenance=provenance)


def load_model(path: str | Path, mmdet_config: str | Path | None = None) -> tuple[CascadeRCNN, ModelInfo]:
    """Load our ``.safetensors`` checkpoint, or an MMDetection 3.x Cascade R-CNN ``.pth`` (+ its ``.py`` config).

    For an mmdet checkpoint without ``mmdet_config``, the config text mmengine's Runner stores in
    ``meta['cfg']`` is used. The model is returned in eval mode on the CPU.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist.")
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}.") from exc
    if not head:
        raise ModelError(f"model file {path} is empty.")
    if path.suffix == ".safetensors" or (len(head) == 8 and not head.startswith(b"PK") and head[:1] != b"\x80"):
        return _load_safetensors(path)
    return _load_mmdet(path, mmdet_config)
