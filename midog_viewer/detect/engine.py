"""Run the detector over a slide region: device choice, tiling, stain normalisation, batching, merging.

:class:`Detector` is what the GUI and the CLI use: ``detect`` for scripts, ``iter_detect`` to draw partial
results per batch and to cancel between batches.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from midog_viewer.classes import MITOTIC_FIGURE
from midog_viewer.detect.checkpoint import ModelInfo, load_model
from midog_viewer.detect.config import CascadeConfig
from midog_viewer.detect.detections import Detections
from midog_viewer.detect.model import CascadeRCNN
from midog_viewer.detect.second_look import SecondLook, candidates, second_look_scores
from midog_viewer.detect.stain import LIGHT_INTENSITY, MacenkoNormalizer
from midog_viewer.detect.tiling import (
    Region,
    drop_duplicates_of,
    keep_centres_in,
    merge_detections,
    plan_tiles,
    sort_by_score,
    tile_cores,
)
from midog_viewer.detect.models import DEMO_MODEL, default_model_for, model_tissue
from midog_viewer.errors import ModelError, SlideError

DEMO_MODEL_PATH = DEMO_MODEL.path
#: At most this many tiles (spread over the region) are read to fit the stain normalisation.
STAIN_FIT_TILES = 16
#: Rough peak GPU memory per 512 × 512 tile in inference, by backbone block type and precision (bytes).
_BYTES_PER_TILE = {("basic", True): 120e6, ("basic", False): 240e6,
                   ("bottleneck", True): 400e6, ("bottleneck", False): 800e6}
_MAX_BATCH = 32
_CPU_BATCH = 4
#: Slides within this fraction of the model's pixel spacing are read as they are: MIDOG's own scanners
#: differ by about 10 % (0.23-0.25 µm/px) and models learn across them without resampling.
RESAMPLE_TOLERANCE = 0.15
#: Planned tiles → the indices of those to run (e.g. the tiles holding tissue).
TileFilter = Callable[[list[Region]], list[int]]
#: Index of a tile in its batch → its pixels with a margin around them, and the margin (slide px).
ContextReader = Callable[[int], tuple[np.ndarray, int]]


def resample_zoom(slide_mpp: float | None, model_mpp: float | None) -> float:
    """Model pixels per slide pixel (slide µm/px over model µm/px); 1.0 if either is unknown or they are close.

    A 20x slide (0.5 µm/px) under a model trained at 40x (0.25 µm/px) gives 2.0: tiles are enlarged twice
    before the model sees them, so a mitosis has the size in pixels the model learnt.
    """
    if not slide_mpp or not model_mpp or slide_mpp <= 0 or model_mpp <= 0:
        return 1.0
    zoom = float(slide_mpp) / float(model_mpp)
    return 1.0 if abs(zoom - 1.0) <= RESAMPLE_TOLERANCE else zoom


class SlideLike(Protocol):
    """What the detector needs of a slide (``midog_viewer.io.Slide`` has it)."""

    width: int
    height: int
    mpp: float | None

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray: ...


@dataclass
class DetectionProgress:
    """One finished batch: ``done`` of ``total`` tiles, this batch's new ``detections`` and all ``merged`` so far.

    Merge-safe: ``detections`` never duplicate those of earlier batches (seams inside the batch are merged by
    NMS, and boxes that repeat an earlier batch's are dropped), so a viewer can simply add each batch.
    ``merged`` is every batch's ``detections`` together, by descending score: what :meth:`Detector.detect`
    returns once all batches are done.
    """

    done: int
    total: int
    detections: Detections
    merged: Detections


def choose_device(device: str | None = None) -> torch.device:
    """``device`` if given (``cpu``, ``cuda``, ``cuda:1``, ``mps``), else CUDA, then Apple MPS, then CPU."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}; use cpu, cuda or mps.") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA was asked for but no CUDA GPU is available; use --device cpu.")
    if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("Apple MPS was asked for but is not available; use --device cpu.")
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"unsupported device {device!r}; use cpu, cuda or mps.")
    return chosen


def clip_region(slide: SlideLike, region: Region | None) -> Region:
    """The part of ``region`` (x, y, w, h, level-0 px; None = whole slide) inside the slide, or a SlideError."""
    if region is None:
        return (0, 0, int(slide.width), int(slide.height))
    x, y, w, h = (int(v) for v in region)
    if w <= 0 or h <= 0:
        raise SlideError(f"region {w}×{h} is empty; width and height must be positive.")
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, int(slide.width)), min(y + h, int(slide.height))
    if x1 <= x0 or y1 <= y0:
        raise SlideError(
            f"region x={x}, y={y}, {w}×{h} lies outside the slide ({slide.width}×{slide.height} px)."
        )
    return (x0, y0, x1 - x0, y1 - y0)


def _read_rgb(slide: SlideLike, tile: Region) -> np.ndarray:
    x, y, w, h = tile
    pixels = np.asarray(slide.read_region(x, y, w, h))
    if pixels.dtype != np.uint8 or pixels.shape != (h, w, 3):
        raise SlideError(f"the slide gave {pixels.dtype} pixels of shape {pixels.shape}, not 8-bit RGB ({h}, {w}, 3).")
    return pixels


def normalize_stains(image: torch.Tensor, od_matrix: torch.Tensor) -> torch.Tensor:
    """Macenko on the device: a (3, H, W) float RGB 0..255 image through the fitted 3×3 optical-density map.

    Same arithmetic as :meth:`MacenkoNormalizer.transform` (including the truncation to whole grey levels).
    """
    od = -torch.log((image + 1.0) / LIGHT_INTENSITY)
    mapped = torch.einsum("ij,jhw->ihw", od_matrix, od)
    return (LIGHT_INTENSITY * torch.exp(-mapped)).clamp(0, 255).floor()


class Detector:
    """A loaded Cascade R-CNN on a device, ready to find mitotic figures in slide regions.

    ``score_thr``, ``stain_normalize`` and ``second_look`` default (None) to what the model file says;
    ``second_look=False`` scores each candidate once (:mod:`midog_viewer.detect.second_look`).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        device: str | None = None,
        score_thr: float | None = None,
        stain_normalize: bool | None = None,
        batch_size: int | None = None,
        *,
        mmdet_config: str | Path | None = None,
        tile_size: int = 512,
        overlap: int = 64,
        nms_iou: float = 0.5,
        resample: bool = True,
        second_look: bool | None = None,
    ) -> None:
        if model_path is None:
            default = default_model_for(None)
            if not default.path.is_file():
                raise ModelError(
                    f"the built-in {default.name} model {default.path} is not there; give a model file (--model)."
                )
            model_path = default.path
        device_chosen = choose_device(device)
        model, info = load_model(model_path, mmdet_config)
        self._setup(
            model, info, device_chosen, score_thr, stain_normalize, batch_size, tile_size, overlap, nms_iou, resample,
            second_look,
        )

    @classmethod
    def from_model(
        cls,
        model: CascadeRCNN,
        info: ModelInfo | None = None,
        device: str | None = None,
        score_thr: float | None = None,
        stain_normalize: bool | None = None,
        batch_size: int | None = None,
        *,
        tile_size: int = 512,
        overlap: int = 64,
        nms_iou: float = 0.5,
        resample: bool = True,
        second_look: bool | None = None,
    ) -> Detector:
        """A detector around a model already in memory (e.g. one just trained), without a checkpoint file."""
        if info is None:
            info = ModelInfo(path=Path("<in memory>"), format="in-memory", config=model.config)
        detector = cls.__new__(cls)
        detector._setup(
            model, info, choose_device(device), score_thr, stain_normalize, batch_size, tile_size, overlap, nms_iou,
            resample, second_look,
        )
        return detector

    def _setup(
        self,
        model: CascadeRCNN,
        info: ModelInfo,
        device: torch.device,
        score_thr: float | None,
        stain_normalize: bool | None,
        batch_size: int | None,
        tile_size: int,
        overlap: int,
        nms_iou: float,
        resample: bool = True,
        second_look: bool | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ModelError(f"batch size must be at least 1, not {batch_size}.")
        if score_thr is not None and not 0.0 <= score_thr <= 1.0:
            raise ModelError(f"the score threshold must lie between 0 and 1, not {score_thr}.")
        if not 0 <= overlap < tile_size:
            raise ModelError(f"tile overlap must be between 0 and {tile_size - 1} px, not {overlap}.")
        self.device = device
        self.info = info
        self.tissue = model_tissue(info.path, info.provenance)
        self.use_amp = device.type == "cuda"
        if device.type == "cuda":
            model = model.to(device, memory_format=torch.channels_last)
        else:
            model = model.to(device)
        self.model = model.eval()
        # None: the model's own operating point (chosen on validation when it was trained here).
        self.score_thr = float(info.config.score_threshold if score_thr is None else score_thr)
        # None: as the model was trained (its provenance says; models from elsewhere were normalised).
        if stain_normalize is None:
            stain_normalize = info.provenance.get("stain_normalised", True) is not False
        self.stain_normalize = bool(stain_normalize)
        self.tile_size = tile_size
        self.overlap = overlap
        self.nms_iou = nms_iou
        self.resample = resample
        self.second_look = _second_look(info.config, second_look)
        self.batch_size = batch_size if batch_size is not None else self._default_batch_size()

    @property
    def device_name(self) -> str:
        """The GPU's name, "Apple MPS" or "CPU"."""
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        if self.device.type == "mps":
            return "Apple MPS"
        return "CPU"

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.config.class_names

    def _default_batch_size(self) -> int:
        """On CUDA, as many tiles as fit in free memory (rough per-tile estimate); elsewhere a few."""
        if self.device.type != "cuda":
            return _CPU_BATCH
        free, _ = torch.cuda.mem_get_info(self.device)
        per_tile = _BYTES_PER_TILE[(self.info.config.block_type, self.use_amp)] * (self.tile_size / 512) ** 2
        return int(max(1, min(_MAX_BATCH, free * 0.8 // per_tile)))

    @property
    def model_mpp(self) -> float | None:
        """Pixel spacing (µm/px) the model learnt at, from its configuration."""
        return self.info.config.mpp

    def zoom_for(self, slide: SlideLike) -> float:
        """How much tiles of ``slide`` are enlarged (>1) or shrunk (<1) before the model sees them."""
        return resample_zoom(getattr(slide, "mpp", None), self.model_mpp) if self.resample else 1.0

    def detect(self, slide: SlideLike, region: Region | None = None, tile_filter: TileFilter | None = None) -> Detections:
        """All detections in ``region`` (level-0 x, y, w, h; None = the whole slide) with score ≥ ``score_thr``."""
        merged = Detections(class_names=self.class_names)
        for progress in self.iter_detect(slide, region, tile_filter=tile_filter):
            merged = progress.merged
        return merged

    def plan(
        self, slide: SlideLike, region: Region | None = None, tile_filter: TileFilter | None = None
    ) -> tuple[list[Region], list[tuple[float, float, float, float]], float]:
        """The tiles to run (after ``tile_filter``, e.g. tissue detection), the part of the region each owns,
        and the resampling zoom. Cores come from the full plan, so a kept tile owns what it owned before."""
        region = clip_region(slide, region)
        # Tiles are cut in slide pixels so that, resampled to the model's pixel spacing, they are tile_size
        # px with overlap px shared: what the model was trained and tuned on.
        zoom = self.zoom_for(slide)
        read_size = max(1, round(self.tile_size / zoom))
        read_overlap = min(round(self.overlap / zoom), read_size - 1)
        tiles = plan_tiles(region, read_size, read_overlap)
        cores = tile_cores(tiles, region)
        if tile_filter is not None:
            kept = tile_filter(tiles)
            tiles, cores = [tiles[i] for i in kept], [cores[i] for i in kept]
        return tiles, cores, zoom

    def stain_matrix(self, slide: SlideLike, tiles: list[Region]) -> np.ndarray | None:
        """The 3×3 Macenko map fitted on up to STAIN_FIT_TILES of ``tiles`` (None: off, no tiles or no tissue)."""
        if not self.stain_normalize or not tiles:
            return None
        matrix = self._fit_stains(slide, tiles, {})
        return None if matrix is None else matrix.cpu().numpy()

    def detect_tiles(
        self,
        slide: SlideLike,
        tiles: list[Region],
        cores: list[tuple[float, float, float, float]],
        od_matrix: np.ndarray | torch.Tensor | None,
        zoom: float = 1.0,
        images: list[np.ndarray] | None = None,
    ) -> Detections:
        """One batch: the detections (score ≥ ``score_thr``) whose centre lies in their tile's core, seams merged."""
        if od_matrix is not None and not isinstance(od_matrix, torch.Tensor):
            od_matrix = torch.as_tensor(np.asarray(od_matrix), dtype=torch.float32, device=self.device)
        images = images if images is not None else [_read_rgb(slide, tile) for tile in tiles]
        found = self._run_batch(images, od_matrix, zoom, self._context_reader(slide, tiles, zoom))
        in_slide = [keep_centres_in(d.translated(t[0], t[1]), core) for d, t, core in zip(found, tiles, cores)]
        return merge_detections(
            Detections.concatenate(in_slide, self.class_names).filter_score(self.score_thr), self.nms_iou
        )

    def iter_detect(
        self,
        slide: SlideLike,
        region: Region | None = None,
        cancel: threading.Event | None = None,
        tile_filter: TileFilter | None = None,
    ) -> Iterator[DetectionProgress]:
        """Yield one :class:`DetectionProgress` per batch of tiles; stop early when ``cancel`` is set.

        ``tile_filter`` (planned tiles → indices to keep) narrows the plan, e.g. to tissue
        (:func:`midog_viewer.detect.tissue.tissue_filter`); without it every tile of the region is run.
        """
        tiles, cores, zoom = self.plan(slide, region, tile_filter)
        if not tiles:
            return
        already_read: dict[int, np.ndarray] = {}
        od_matrix = self._fit_stains(slide, tiles, already_read) if self.stain_normalize else None
        emitted = Detections(class_names=self.class_names)
        done = 0
        while done < len(tiles):
            if cancel is not None and cancel.is_set():
                return
            batch = tiles[done : done + self.batch_size]
            images = [
                already_read.pop(done + i) if done + i in already_read else _read_rgb(slide, tile)
                for i, tile in enumerate(batch)
            ]
            candidates = self.detect_tiles(slide, batch, cores[done : done + len(batch)], od_matrix, zoom, images)
            new = drop_duplicates_of(candidates, emitted, self.nms_iou)
            emitted = sort_by_score(emitted + new)
            done += len(batch)
            yield DetectionProgress(done, len(tiles), new, emitted)

    def _fit_stains(
        self, slide: SlideLike, tiles: list[Region], already_read: dict[int, np.ndarray]
    ) -> torch.Tensor | None:
        """Fit Macenko once on up to STAIN_FIT_TILES tiles spread over the region (kept for the detection pass).

        Returns the 3×3 optical-density map on the device, or None when the region shows no tissue.
        """
        picks = np.unique(np.linspace(0, len(tiles) - 1, min(len(tiles), STAIN_FIT_TILES)).round().astype(int))
        for index in picks:
            already_read[int(index)] = _read_rgb(slide, tiles[int(index)])
        normalizer = MacenkoNormalizer()
        normalizer.fit(np.concatenate([already_read[int(i)].reshape(-1, 3) for i in picks]).reshape(-1, 1, 3))
        matrix = normalizer.od_matrix()
        return None if matrix is None else torch.as_tensor(matrix, dtype=torch.float32, device=self.device)

    def _context_reader(self, slide: SlideLike, tiles: list[Region], zoom: float) -> ContextReader | None:
        """Tile i → its pixels with a margin of half a second-look window around, and that margin (slide px)."""
        if self.second_look is None:
            return None
        margin = math.ceil(self.second_look.side / 2 / zoom) + 1

        def read(index: int) -> tuple[np.ndarray, int]:
            x, y, w, h = tiles[index]
            return _read_rgb(slide, (x - margin, y - margin, w + 2 * margin, h + 2 * margin)), margin

        return read

    def _run_batch(
        self, images: list[np.ndarray], od_matrix: torch.Tensor | None, zoom: float = 1.0,
        context: ContextReader | None = None,
    ) -> list[Detections]:
        """Run the model on a batch; out of GPU memory, retry in halves, then raise ModelError."""
        try:
            return self._forward(images, od_matrix, zoom, context)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(images) == 1:
                raise ModelError(
                    f"out of memory on {self.device_name} even with one tile per batch; use --device cpu."
                ) from None
            self.batch_size = max(1, len(images) // 2)
            half = len(images) // 2
            rest = None if context is None else (lambda index: context(index + half))
            return (self._run_batch(images[:half], od_matrix, zoom, context)
                    + self._run_batch(images[half:], od_matrix, zoom, rest))

    @torch.inference_mode()
    def _forward(
        self, images: list[np.ndarray], od_matrix: torch.Tensor | None, zoom: float = 1.0,
        context: ContextReader | None = None,
    ) -> list[Detections]:
        tensors, scales = zip(*(self._model_input(image, od_matrix, zoom) for image in images))
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.use_amp):
            outputs = self.model(list(tensors))
            if self.second_look is not None:
                for index, (tensor, out) in enumerate(zip(tensors, outputs)):
                    if not len(candidates(out, self.second_look)):
                        continue
                    if context is None:  # no slide to read around the tile: windows past it are white
                        out["scores"] = second_look_scores(self.model, tensor, out, self.second_look)
                        continue
                    pixels, margin = context(index)
                    around, (sx, sy) = self._model_input(pixels, od_matrix, zoom)
                    out["scores"] = second_look_scores(
                        self.model, around, out, self.second_look, (margin * sx, margin * sy)
                    )
        found = []
        for out, (sx, sy) in zip(outputs, scales):
            boxes = out["boxes"].float().cpu().numpy()
            if (sx, sy) != (1.0, 1.0):
                boxes = boxes / np.array([sx, sy, sx, sy], dtype=np.float32)
            found.append(
                Detections(boxes, out["scores"].float().cpu().numpy(), out["labels"].cpu().numpy(), self.class_names)
            )
        return found

    def _model_input(
        self, image: np.ndarray, od_matrix: torch.Tensor | None, zoom: float
    ) -> tuple[torch.Tensor, tuple[float, float]]:
        """An RGB tile as the model reads it (on the device, stain-normalised, resampled) and its x, y scale."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float()
        if od_matrix is not None:
            tensor = normalize_stains(tensor, od_matrix)
        if zoom != 1.0:
            return resample_tile(tensor, zoom)
        return tensor, (1.0, 1.0)


def _second_look(config: CascadeConfig, wanted: bool | None) -> SecondLook | None:
    """The model's second look (None: off), unless ``wanted`` is False; a model without one cannot be given one,
    since the window's side is what the model learnt on."""
    if wanted is False or config.second_look_px == 0 or MITOTIC_FIGURE not in config.class_names:
        return None
    return SecondLook(config.second_look_px, config.second_look_floor, config.class_names.index(MITOTIC_FIGURE))


def resample_tile(image: torch.Tensor, zoom: float) -> tuple[torch.Tensor, tuple[float, float]]:
    """A (3, H, W) float tile resized by ``zoom`` (antialiased when shrinking) and its exact x, y scale factors."""
    height, width = image.shape[-2:]
    new_h, new_w = max(1, round(height * zoom)), max(1, round(width * zoom))
    resized = torch.nn.functional.interpolate(
        image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=zoom < 1.0
    )[0]
    return resized, (new_w / width, new_h / height)
