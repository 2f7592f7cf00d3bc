"""One training run: the loop, its run folder, checkpoints, validation, cancelling and resuming.

The run folder holds ``run.json`` (config, recipe, data), ``progress.jsonl`` (see
:mod:`midog_viewer.train.progress`), ``epoch_NNN.safetensors`` per epoch, ``best.safetensors`` (highest
validation F1) and ``last.safetensors`` in the detector's checkpoint format, ``state.pt`` (optimizer,
scheduler and position, plain tensors and numbers only, read back with ``weights_only=True``) and
``metrics.json``. Cancelling (``should_stop`` returning True, e.g. on SIGTERM) saves ``last`` and
``state.pt`` at the current step, so ``resume`` continues exactly there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from midog_viewer.detect.config import PRESET_NAMES, CascadeConfig
from midog_viewer.detect.torch_file import load_weights_only
from midog_viewer.errors import ModelError, TrainingError
from midog_viewer.evaluate import RADIUS_UM
from midog_viewer.train.data import NO_DATA, DataSpec, Split, gather, resolve_paths
from midog_viewer.train.patches import PatchDataset, collate
from midog_viewer.train.sources import LabelledImage
from midog_viewer.train.model import build_model, write_checkpoint
from midog_viewer.train.mosaic import MosaicDataset, validation_mosaics
from midog_viewer.train.progress import ProgressWriter
from midog_viewer.train.colour import lab_spread
from midog_viewer.train.recipe import Augmenter, Recipe, lr_factor, total_steps
from midog_viewer.train.stain import ImageStain
from midog_viewer.train.validate import validation_scores

RUN_FILE = "run.json"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.json"


@dataclass
class RunResult:
    """How a run ended: ``done`` or ``cancelled``, its best validation F1 and where the checkpoints are."""

    status: str
    run_dir: Path
    best_f1: float | None
    best_epoch: int | None
    baseline_f1: float | None
    epochs_done: int
    step: int

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.safetensors"

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "last.safetensors"


def train(
    data: DataSpec | None,
    out_dir: str | Path,
    *,
    config: str | None = None,
    recipe: Recipe | None = None,
    device: str = "cpu",
    init: str | Path | None = None,
    baseline: str | Path | None = None,
    resume: str | Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    echo: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train a detector and write the run folder ``out_dir``.

    ``config`` names the architecture (``tiny``, ``r50``, ``x101-64x4d``); with ``init`` it may be left out
    and the checkpoint's architecture is fine-tuned. ``baseline`` (default: ``init``) is the model whose
    validation F1 the run is compared against. ``resume`` is an earlier run folder: its config, recipe
    (epochs may be raised through ``recipe``) and data are reused unless given, and training continues
    from its saved state. Every check of the input happens before the first step. ``echo`` receives
    every progress event as it is written.
    """
    out_dir = Path(out_dir)
    previous = _load_run(Path(resume)) if resume is not None else None
    if previous is not None:
        data = data if data is not None and not data.empty else DataSpec.from_dict(previous["data"])
        config = config or previous["config"]
        init = init or previous.get("init")
        baseline = baseline or previous.get("baseline")
        if recipe is None:
            recipe = Recipe.from_dict(previous["recipe"])
    recipe = recipe or Recipe()
    if data is None:
        raise TrainingError(NO_DATA)
    if config is None and init is None:
        raise TrainingError(
            f"name a model configuration (--config {'|'.join(PRESET_NAMES)}) or a checkpoint to fine-tune (--init)."
        )
    if previous is None and (out_dir / STATE_FILE).exists():
        raise TrainingError(f"{out_dir} already holds a run; resume it with --resume {out_dir} or choose another --out.")
    torch_device = _device(device)

    data = resolve_paths(data)
    split = gather(data)
    model, model_config = build_model(config, init, recipe.model_overrides())
    model_config = dataclasses.replace(model_config, mpp=training_mpp(split.train, model_config.mpp))
    if recipe.second_look_px is not None:
        model_config = dataclasses.replace(model_config, second_look_px=recipe.second_look_px)
    baseline = baseline if baseline is not None else init
    baseline_model = build_model(None, baseline)[0] if baseline is not None and baseline != init else None
    state = _load_state(Path(resume)) if resume is not None else None

    loop = _Loop(split, model, model_config, recipe, torch_device, out_dir, should_stop, echo)
    loop.training_data = data.describe()
    out_dir.mkdir(parents=True, exist_ok=True)
    run_record = {
        "config": config,
        "model_config": model_config.to_dict(),
        "recipe": recipe.to_dict(),
        "data": data.to_dict(),
        "init": str(init) if init is not None else None,
        "baseline": str(baseline) if baseline is not None else None,
        "device": str(torch_device),
        "resumed_from": str(resume) if resume is not None else None,
    }
    (out_dir / RUN_FILE).write_text(json.dumps(run_record, indent=2), encoding="utf-8")
    if state is not None:
        loop.restore(state)
    elif baseline is not None:
        loop.evaluate_baseline(baseline_model if baseline_model is not None else model)
    return loop.run()


def training_mpp(images: Sequence[LabelledImage], default: float | None) -> float | None:
    """The pixel spacing the model learns at: the median of the training images' (``default`` if none is known).

    The checkpoint records it, so the detector can resample slides scanned at another resolution.
    """
    known = [float(im.mpp) for im in images if im.mpp]
    return round(float(statistics.median(known)), 4) if known else default


def _check_repeated_sources(repeats: dict[str, int], images: Sequence[LabelledImage]) -> None:
    """Every source named in ``repeats`` holds training images (a misspelt name would repeat nothing)."""
    known = {im.source for im in images}
    unknown = sorted(set(repeats) - known)
    if unknown:
        names = ", ".join(repr(s) for s in sorted(known, key=str) if s) or "none"
        raise TrainingError(f"no training image is of source {unknown[0]!r} to repeat; the sources are: {names}.")


class _Loop:
    """The state of a run between steps (kept together so cancel and resume see the same picture)."""

    def __init__(
        self,
        split: Split,
        model: torch.nn.Module,
        model_config: CascadeConfig,
        recipe: Recipe,
        device: torch.device,
        out_dir: Path,
        should_stop: Callable[[], bool],
        echo: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.split, self.recipe, self.device, self.out_dir = split, recipe, device, out_dir
        self.should_stop = should_stop
        self.model = model.to(device)
        self.model_config = model_config
        self.stain = ImageStain() if recipe.stain_normalise else None
        self.val_images = split.val
        if recipe.source_repeats and not recipe.mosaic_side:
            raise TrainingError("source repeats apply to crop mosaics only (--points with --mosaic).")
        if recipe.lab_transfer_probability and not recipe.mosaic_side:
            raise TrainingError("LAB colour transfer applies to crop mosaics only (--points with --mosaic).")
        if recipe.mosaic_side:
            _check_repeated_sources(recipe.source_repeats, split.train)
            if recipe.lab_transfer_probability and recipe.lab_spread is None:
                recipe.lab_spread = lab_spread(im.pixels for im in split.train if im.pixels is not None).to_dict()
            self.dataset = MosaicDataset(
                split.train, recipe.mosaic_side, augment=Augmenter(recipe), stain=self.stain, seed=recipe.seed,
                repeats=recipe.source_repeats,
            )
            self.val_images = validation_mosaics(split.val, recipe.mosaic_side)
        else:
            self.dataset = PatchDataset(
                split.train,
                recipe.patch_size,
                augment=Augmenter(recipe),
                stain=self.stain,
                patches_per_object=recipe.patches_per_object,
                random_patches_per_image=recipe.random_patches_per_image,
                min_visible=recipe.min_crop_visible,
                seed=recipe.seed,
            )
        self.steps_per_epoch = math.ceil(len(self.dataset) / recipe.batch_size)
        self.total_steps = total_steps(len(self.dataset), recipe)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.steps_per_epoch, recipe)
        )
        self.amp = recipe.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.progress = ProgressWriter(out_dir, echo)
        self.step = 0
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_f1: float | None = None
        self.best_epoch: int | None = None
        self.baseline_f1: float | None = None
        self.training_data: dict[str, Any] = {}

    @property
    def model_config(self) -> CascadeConfig:
        """The model's configuration as checkpoints record it (the one source of truth).

        The model in training carries the same configuration plus the recipe's training-time sampling sizes
        (validation runs it through the detector, which resamples by the model's own ``mpp``).
        """
        return self._model_config

    @model_config.setter
    def model_config(self, config: CascadeConfig) -> None:
        self._model_config = config
        self.model.config = dataclasses.replace(config, **self.recipe.model_overrides())

    # ------------------------------------------------------------------ state

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise TrainingError(f"the saved training state does not fit this model: {exc}") from exc
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.history = list(state["history"])
        self.best_f1, self.best_epoch = state["best_f1"], state["best_epoch"]
        self.baseline_f1 = state["baseline_f1"]
        # The saved schedule holds the old base lr; a resumed run follows the recipe it was given.
        self.scheduler.base_lrs = [self.recipe.lr] * len(self.optimizer.param_groups)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.recipe.lr
            group["lr"] = self.recipe.lr * lr_factor(self.step, self.steps_per_epoch, self.recipe)

    def _save_state(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "history": self.history,
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "baseline_f1": self.baseline_f1,
        }
        tmp = self.out_dir / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / STATE_FILE)

    def _checkpoint(self, name: str, **provenance: Any) -> Path:
        path = self.out_dir / name
        write_checkpoint(
            self.model,
            self.model_config,
            path,
            {
                "trained_by": "midog-viewer train",
                "run": str(self.out_dir.resolve()),
                "step": self.step,
                "epochs_done": self.epoch,
                "stain_normalised": self.recipe.stain_normalise,
                "training_data": self.training_data,
                **provenance,
            },
        )
        return path

    # ------------------------------------------------------------------ phases

    def evaluate_baseline(self, model: torch.nn.Module) -> None:
        scores = self._validate(model.to(self.device))
        if scores is not None:
            self.baseline_f1 = scores["f1"]
            self.progress.write("baseline", val_f1=scores["f1"], val=scores)

    def run(self) -> RunResult:
        r = self.recipe
        self.progress.write(
            "start",
            step=self.step,
            epoch=self.epoch,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            epochs=r.epochs,
            train_patches=len(self.dataset),
            device=str(self.device),
            amp=self.amp,
            **self.split.summary(),
        )
        started, steps_at_start = time.monotonic(), self.step
        window: dict[str, float] = {}
        window_steps = 0
        while self.epoch < r.epochs:
            self.dataset.set_epoch(self.epoch)
            batches = epoch_batches(len(self.dataset), r.batch_size, r.seed, self.epoch)
            loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=batches[self.batch_in_epoch :],
                collate_fn=collate,
                num_workers=r.workers,
            )
            self.model.train()
            for images, targets in loader:
                if self.should_stop():
                    return self._cancel()
                losses = self._step(images, targets)
                self.step += 1
                self.batch_in_epoch += 1
                for key, value in losses.items():
                    window[key] = window.get(key, 0.0) + value
                window_steps += 1
                if self.step % r.log_every == 0 or self.batch_in_epoch == len(batches):
                    elapsed = time.monotonic() - started
                    rate = (self.step - steps_at_start) / elapsed if elapsed > 0 else 0.0
                    mean = {k: v / window_steps for k, v in window.items()}
                    self.progress.write(
                        "step",
                        step=self.step,
                        epoch=self.epoch + self.batch_in_epoch / len(batches),
                        total_steps=self.total_steps,
                        losses=mean,
                        loss=sum(mean.values()),
                        lr=self.optimizer.param_groups[0]["lr"],
                        steps_per_s=rate,
                        eta_s=(self.total_steps - self.step) / rate if rate > 0 else None,
                    )
                    window, window_steps = {}, 0
            if self.should_stop():
                return self._cancel()
            scores = self._validate(self.model)
            if scores is None:
                return self._cancel()
            self.epoch += 1
            self.batch_in_epoch = 0
            self._end_epoch(scores)
        return self._finish("done")

    def _step(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            losses = self.model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {float(loss)} at step {self.step + 1}; lower the learning rate or check the labels."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.recipe.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.recipe.grad_clip_norm
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _validate(self, model: torch.nn.Module) -> dict[str, Any] | None:
        scores = validation_scores(
            model,
            self.val_images,
            self.device,
            score_threshold=self.recipe.val_score_threshold,
            stain_normalise=self.recipe.stain_normalise,
            field_mitoses_per_mm2=self.recipe.val_field_mitoses_per_mm2,
            should_stop=self.should_stop,
        )
        model.train()
        return scores

    def _end_epoch(self, scores: dict[str, Any]) -> None:
        name = f"epoch_{self.epoch:03d}.safetensors"
        # The checkpoint's operating point is the threshold its validation F1 was taken at.
        self.model_config = dataclasses.replace(self.model_config, score_threshold=scores["score_threshold"])
        self._checkpoint(name, epoch=self.epoch, val_f1=scores["f1"])
        self._checkpoint("last.safetensors", epoch=self.epoch, val_f1=scores["f1"])
        improved = self.best_f1 is None or scores["f1"] > self.best_f1
        if improved:
            self.best_f1, self.best_epoch = scores["f1"], self.epoch
            self._checkpoint("best.safetensors", epoch=self.epoch, val_f1=scores["f1"])
        self.history.append({"epoch": self.epoch, "step": self.step, **scores})
        self._prune_epoch_checkpoints()
        self._save_state()
        self.progress.write(
            "epoch", epoch=self.epoch, step=self.step, val_f1=scores["f1"], val=scores, best=improved, checkpoint=name
        )
        self._write_metrics("running")

    def _prune_epoch_checkpoints(self) -> None:
        keep = self.recipe.keep_epoch_checkpoints
        if keep > 0:
            for old in sorted(self.out_dir.glob("epoch_*.safetensors"))[:-keep]:
                old.unlink()

    def _cancel(self) -> RunResult:
        self._checkpoint("last.safetensors", epoch=self.epoch, cancelled=True)
        self._save_state()
        self.progress.write("cancelled", step=self.step, epoch=self.epoch, checkpoint="last.safetensors")
        return self._finish("cancelled")

    def _finish(self, status: str) -> RunResult:
        self._write_metrics(status)
        if status == "done":
            self.progress.write("done", step=self.step, epoch=self.epoch, best_f1=self.best_f1, best_epoch=self.best_epoch)
        return RunResult(status, self.out_dir, self.best_f1, self.best_epoch, self.baseline_f1, self.epoch, self.step)

    def _write_metrics(self, status: str) -> None:
        best = next((h for h in self.history if h["epoch"] == self.best_epoch), None)
        metrics = {
            "status": status,
            "metric": f"MIDOG F1 (hit within {RADIUS_UM:g} um, mitotic-figure detections with score >= threshold)",
            "score_threshold": (best or {}).get("score_threshold", self.recipe.val_score_threshold),
            "score_threshold_chosen_on_validation": self.recipe.val_score_threshold is None,
            "val_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "best": best,
            "baseline_f1": self.baseline_f1,
            "epochs_done": self.epoch,
            "step": self.step,
            "history": self.history,
            **self.split.summary(),
        }
        (self.out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's shuffled batches, the same for the same (seed, epoch), so a resumed run can skip ahead."""
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n_items, batch_size)]


def _device(name: str) -> torch.device:
    """The training device, chosen as the detector chooses it; an unusable one is a TrainingError."""
    from midog_viewer.detect.engine import choose_device

    try:
        return choose_device(name)
    except ModelError as exc:
        raise TrainingError(str(exc)) from exc


def _load_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file() or not (run_dir / STATE_FILE).is_file():
        raise TrainingError(f"{run_dir} is not a run folder that can be resumed (no {RUN_FILE} and {STATE_FILE}).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{path} is damaged: {exc}.") from exc


#: What ``state.pt`` must hold (see ``_Loop._save_state``): state dicts, and plain numbers and lists.
_STATE_DICTS = ("model", "optimizer", "scheduler", "scaler")
_STATE_NUMBERS = ("step", "epoch", "batch_in_epoch")


def _load_state(run_dir: Path) -> dict[str, Any]:
    """The saved training state, read as weights only; anything else in the file is one TrainingError."""
    state = load_weights_only(run_dir / STATE_FILE, error=TrainingError)
    fits = (
        isinstance(state, dict)
        and all(isinstance(state.get(k), dict) for k in _STATE_DICTS)
        and all(isinstance(state.get(k), int) and state[k] >= 0 for k in _STATE_NUMBERS)
        and isinstance(state.get("history"), list)
        and all(k in state for k in ("best_f1", "best_epoch", "baseline_f1"))
    )
    if not fits:
        raise TrainingError(f"{run_dir / STATE_FILE} is not the training state midog-viewer saves.")
    return state


def saved_recipe(run_dir: str | Path) -> Recipe:
    """The recipe a run folder was trained with (to resume it with a few settings changed)."""
    return Recipe.from_dict(_load_run(Path(run_dir))["recipe"])
