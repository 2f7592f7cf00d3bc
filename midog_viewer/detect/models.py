"""The detectors we ship, and which one detects what is open.

The real-tissue model (trained on real H&E crops) is the default for every slide; the synthetic demo model
only for the synthetic sample it was made for. A model trained here says in its provenance what it learnt
from, so the dock can name the tissue and warn when a synthetic-only model meets a real slide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midog_viewer._resources import resource_path


@dataclass(frozen=True)
class ShippedModel:
    """A model file in ``resources/models`` with the tissue it was trained on."""

    name: str
    file: str
    tissue: str
    synthetic: bool

    @property
    def path(self) -> Path:
        return resource_path("models", self.file)

    @property
    def card(self) -> Path:
        return resource_path("models", Path(self.file).with_suffix(".md").name)


REAL_MODEL = ShippedModel(
    "real-tiny",
    "real-tiny.safetensors",
    "real H&E: AMi-Br, AtNorM-MD, MITOS-ATYPIA-14 and TUPAC16 crops, CMU-1 skin as background (research use)",
    synthetic=False,
)
DEMO_MODEL = ShippedModel("demo-tiny", "demo-tiny.safetensors", "synthetic H&E-like fields only", synthetic=True)
SHIPPED_MODELS = (REAL_MODEL, DEMO_MODEL)


def is_synthetic_image(path: str | Path | None) -> bool:
    """Whether ``path`` is the built-in synthetic sample (or another field the generator wrote to its cache)."""
    if path is None:
        return False
    from midog_viewer.synthetic import SAMPLE_PREFIX, cache_dir

    path = Path(path)
    try:
        in_cache = path.resolve().parent == cache_dir().resolve()
    except OSError:
        return False
    return in_cache and path.name.startswith(SAMPLE_PREFIX)


def default_model_for(path: str | Path | None = None) -> ShippedModel:
    """The shipped model for the image at ``path``: the demo model for the synthetic sample, else the real one.

    Without the real model's file (a checkout that predates it) every image gets the demo model.
    """
    if is_synthetic_image(path) or not REAL_MODEL.path.is_file():
        return DEMO_MODEL
    return REAL_MODEL


@dataclass(frozen=True)
class ModelTissue:
    """What a loaded model learnt from, in words, and whether that was synthetic data only."""

    name: str
    tissue: str
    synthetic: bool | None  # None: not known


def model_tissue(path: str | Path, provenance: dict[str, Any]) -> ModelTissue:
    """The tissue a checkpoint was trained on: a shipped model by its file, else its training provenance."""
    path = Path(path)
    for shipped in SHIPPED_MODELS:
        try:
            if path.resolve() == shipped.path.resolve():
                return ModelTissue(shipped.name, shipped.tissue, shipped.synthetic)
        except OSError:
            continue
    data = provenance.get("training_data")
    if isinstance(data, dict) and isinstance(data.get("summary"), str):
        synthetic = data.get("synthetic_only")
        return ModelTissue(path.stem, data["summary"], synthetic if isinstance(synthetic, bool) else None)
    return ModelTissue(path.stem, "unknown tissue", None)
