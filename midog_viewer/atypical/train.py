"""Training the atypical classifier: run folder, loop, validation, threshold tuning, cancel and resume.

The run folder follows ``midog-viewer train``: ``run.json`` (settings, data, split), ``progress.jsonl`` (events
``start``, ``baseline`` when fine-tuning, ``step``, ``epoch``, ``cancelled``, ``done``; see
:mod:`midog_viewer.train.progress`),
``last.safetensors`` per epoch, ``state.pt`` (plain tensors and numbers, read with ``weights_only=True``),
``metrics.json``, and at the end ``model.safetensors``: the last epoch with the threshold that maximises
validation balanced accuracy (test-time augmentation as at inference). The loss weights atypical crops by
the normal/atypical ratio of the training split. Crops from review stores come as one more folder
(:mod:`midog_viewer.atypical.reviewed` writes it inside the run).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from midog_viewer.atypical.augment import AugmentSettings, augment
from midog_viewer.atypical.data import CONTEXT_MARGIN, LabelledCrop, labelled_crops, load_tensors, split_crops
from midog_viewer.atypical.metrics import best_threshold, summary
from midog_viewer.atypical.model import (AtypicalConfig, AtypicalNet, load_classifier, predict_proba, save_classifier,
                                         with_threshold)
from midog_viewer.detect.torch_file import load_weights_only
from midog_viewer.errors import TrainingError
from midog_viewer.formats import atomic
from midog_viewer.train.progress import ProgressWriter
from midog_viewer.train.run import epoch_batches

RUN_FILE = "run.json"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
#: Entries of ``run.json`` a resumed run keeps as they were (where its data and its start came from).
_CARRIED = ("init", "baseline", "stores", "reviewed_figures", "reviewed_atypical")


@dataclass
class AtypicalRecipe:
    """Optimisation settings of a run (saved in ``run.json``; a resumed run reuses them, epochs may grow)."""

    epochs: int = 36
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    val_fraction: float = 0.2
    seed: int = 0
    log_every: int = 10
    augment: AugmentSettings = field(default_factory=AugmentSettings)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.log_every < 1:
            raise TrainingError("epochs >= 1, batch size >= 2, lr > 0 and log_every >= 1 are needed.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AtypicalRecipe:
        data = dict(data)
        aug = data.pop("augment", {})
        aug = {k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()}
        try:
            return cls(**data, augment=AugmentSettings(**aug))
        except TypeError as exc:
            raise TrainingError(f"the saved atypical recipe does not fit this version: {exc}.") from exc


@dataclass
class AtypicalResult:
    """How a run ended (``done`` or ``cancelled``), where it is, and its validation figures."""

    status: str
    run_dir: Path
    epochs_done: int
    step: int
    threshold: float | None = None
    validation: dict[str, Any] | None = None

    @property
    def model_path(self) -> Path:
        return self.run_dir / MODEL_FILE


#: What a fine-tuning run changes in the recipe unless told: fewer epochs and a quarter of the learning rate, so
#: a few hundred reviewed crops adjust the shipped classifier rather than overwrite what it learnt.
FINE_TUNE_DEFAULTS = {"epochs": 10, "lr": 5e-4}


def lr_at(step: int, steps_per_epoch: int, recipe: AtypicalRecipe) -> float:
    """Linear warm-up then cosine decay to zero over the run."""
    total = steps_per_epoch * recipe.epochs
    warm = max(1, int(recipe.warmup_epochs * steps_per_epoch))
    if step < warm:
        return recipe.lr * (step + 1) / warm
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def train_atypical(
    data_root: str | Path | Sequence[str | Path] | None,
    out_dir: str | Path,
    *,
    recipe: AtypicalRecipe | None = None,
    config: AtypicalConfig | None = None,
    device: str = "cpu",
    resume: str | Path | None = None,
    limit: int | None = None,
    init: str | Path | None = None,
    record: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    echo: Callable[[dict[str, Any]], None] | None = None,
) -> AtypicalResult:
    """Train on the rated crops of one or more ``real_mitosis``-style folders and write the run folder ``out_dir``.

    ``resume`` is an earlier run folder: its data, config and recipe are reused (``recipe`` may raise the
    epochs) and training continues at its saved step. ``limit`` keeps only the first N crops of each
    source and class (for quick trials). ``init`` is a classifier checkpoint to fine-tune: its config and
    weights are the start, and its own validation figures on this run's split are the ``baseline`` event
    (the model being replaced, at its own threshold). ``record`` adds entries to ``run.json`` (where the
    data came from). Every check of the input happens before the first step.
    """
    out_dir = Path(out_dir)
    previous = _load_run(Path(resume)) if resume is not None else None
    state = _load_state(Path(resume)) if resume is not None else None  # checked before run.json is rewritten
    start_model = None
    if previous is not None:
        data_root = data_root or previous.get("data_roots") or previous["data_root"]
        config = config or AtypicalConfig.from_dict(previous["config"])
        record = {k: v for k, v in previous.items() if k in _CARRIED} | (record or {})
        base = AtypicalRecipe.from_dict(previous["recipe"])
        recipe = dataclasses.replace(base, epochs=recipe.epochs) if recipe is not None else base
        limit = limit if limit is not None else previous.get("limit")
    elif (out_dir / STATE_FILE).exists():
        raise TrainingError(f"{out_dir} already holds a run; resume it with --resume {out_dir} or choose another --out.")
    elif init is not None:
        if config is not None:
            raise TrainingError("a fine-tuned classifier keeps its network; give --init or a config, not both.")
        start_model, _ = load_classifier(init)
        config = start_model.config
    if not data_root:
        raise TrainingError("no training data: give --data, a folder in the real_mitosis layout.")
    recipe, config = recipe or AtypicalRecipe(), config or AtypicalConfig()
    from midog_viewer.train.run import _device

    torch_device = _device(device)
    root, crops = _crops_of([data_root] if isinstance(data_root, (str, Path)) else list(data_root))
    crops = _limited(crops, limit)
    train_crops, val_crops = split_crops(crops, recipe.val_fraction, recipe.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    roots = [data_root] if isinstance(data_root, (str, Path)) else list(data_root)
    record = {
        "data_root": str(Path(roots[0]).resolve()), "data_roots": [str(Path(r).resolve()) for r in roots],
        "limit": limit, "config": json.loads(config.to_json()),
        "init": str(Path(init).resolve()) if init is not None else None, **(record or {}),
        "recipe": recipe.to_dict(), "device": str(torch_device), "resumed_from": str(resume) if resume else None,
        "split": {"rule": "by slide within each source (train.splits.validation_by_slide); slide-less sources train",
                  "val_files": [c.file for c in val_crops]},
    }
    loop = _Loop(root, train_crops, val_crops, config, recipe, torch_device, out_dir, should_stop, echo)
    if state is not None:
        loop.restore(state)  # a state that does not fit is refused before anything in the run folder changes
    elif start_model is not None:
        loop.model.load_state_dict(start_model.state_dict())
        record["baseline"] = loop.validate(tta=config.tta, threshold=config.threshold)
    loop.baseline = record.get("baseline")
    atomic.write_text(out_dir / RUN_FILE, json.dumps(record, indent=1))
    return loop.run()


def _crops_of(roots: list[str | Path]) -> tuple[Path, list[LabelledCrop]]:
    """The rated crops of every folder, and the folder their ``file`` is relative to (several folders: the
    files are absolute and that folder is the current one)."""
    if len(roots) == 1:
        return Path(roots[0]), labelled_crops(roots[0])
    return Path(), [dataclasses.replace(c, file=str((Path(root) / c.file).resolve()))
                    for root in roots for c in labelled_crops(root)]


def _limited(crops: list[LabelledCrop], limit: int | None) -> list[LabelledCrop]:
    if not limit:
        return crops
    kept, seen = [], {}
    for crop in crops:
        key = (crop.source, crop.atypical)
        if seen.get(key, 0) < limit:
            seen[key] = seen.get(key, 0) + 1
            kept.append(crop)
    return kept


class _Loop:
    """A run's state between steps, kept together so cancel and resume see the same picture."""

    def __init__(self, root: Path, train_crops: list[LabelledCrop], val_crops: list[LabelledCrop],
                 config: AtypicalConfig, recipe: AtypicalRecipe, device: torch.device, out_dir: Path,
                 should_stop: Callable[[], bool], echo: Callable[[dict[str, Any]], None] | None) -> None:
        self.train_crops, self.val_crops, self.recipe, self.device, self.out_dir = (
            train_crops, val_crops, recipe, device, out_dir)
        self.should_stop = should_stop
        self.train_x = load_tensors(root, train_crops, config.input_px, config.mpp, CONTEXT_MARGIN)
        self.train_y = torch.tensor([c.atypical for c in train_crops], dtype=torch.float32)
        self.val_x = load_tensors(root, val_crops, config.input_px, config.mpp, 0)
        self.val_y = [c.atypical for c in val_crops]
        self.val_sources = [c.source for c in val_crops]
        positives = float(self.train_y.sum())
        self.pos_weight = torch.tensor((len(self.train_y) - positives) / max(positives, 1.0))
        torch.manual_seed(recipe.seed)
        self.model = AtypicalNet(config).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.steps_per_epoch = math.ceil(len(train_crops) / recipe.batch_size)
        self.total_steps = self.steps_per_epoch * recipe.epochs
        self.progress = ProgressWriter(out_dir, echo)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.baseline: dict[str, Any] | None = None  # the fine-tuned model's own figures before the first step

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise TrainingError(f"the saved training state does not fit this model: {exc}") from exc

    def _save_state(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "history": self.history}
        with atomic.open_binary(self.out_dir / STATE_FILE) as handle:
            torch.save(state, handle)

    def _provenance(self, **extra: Any) -> dict[str, Any]:
        return {"trained_by": "midog-viewer train-atypical", "run": str(self.out_dir.resolve()), "step": self.step,
                "epochs_done": self.epoch, "train_crops": len(self.train_crops), "val_crops": len(self.val_crops),
                **extra}

    def run(self) -> AtypicalResult:
        r = self.recipe
        self.progress.write("start", step=self.step, epoch=self.epoch, total_steps=self.total_steps,
                            epochs=r.epochs, train_crops=len(self.train_crops), val_crops=len(self.val_crops),
                            train_atypical=int(self.train_y.sum()), val_atypical=int(sum(self.val_y)),
                            device=str(self.device))
        if self.baseline is not None and self.step == 0:
            self.progress.write("baseline", threshold=self.baseline["threshold"], val=self.baseline,
                                val_balanced_accuracy=self.baseline["all"]["balanced_accuracy"],
                                val_auroc=self.baseline["all"]["auroc"])
        started, steps_at_start, window, window_n = time.monotonic(), self.step, 0.0, 0
        while self.epoch < r.epochs:
            batches = epoch_batches(len(self.train_crops), r.batch_size, r.seed, self.epoch)
            self.model.train()
            for index in batches[self.batch_in_epoch:]:
                if self.should_stop():
                    return self._cancel()
                window += self._step(index)
                window_n += 1
                self.step += 1
                self.batch_in_epoch += 1
                if self.step % r.log_every == 0 or self.batch_in_epoch == len(batches):
                    elapsed = time.monotonic() - started
                    rate = (self.step - steps_at_start) / elapsed if elapsed > 0 else 0.0
                    self.progress.write("step", step=self.step, epoch=self.epoch + self.batch_in_epoch / len(batches),
                                        total_steps=self.total_steps, loss=window / window_n,
                                        lr=self.optimizer.param_groups[0]["lr"], steps_per_s=rate,
                                        eta_s=(self.total_steps - self.step) / rate if rate > 0 else None)
                    window, window_n = 0.0, 0
            if self.should_stop():
                return self._cancel()
            self.epoch += 1
            self.batch_in_epoch = 0
            self._end_epoch()
        return self._finish()

    def _step(self, index: list[int]) -> float:
        gen = torch.Generator().manual_seed(self.recipe.seed * 1_000_003 + self.step)
        torch.manual_seed(self.recipe.seed * 1_000_003 + self.step)  # dropout: a resumed run draws the same
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.steps_per_epoch, self.recipe)
        x = augment(self.train_x[index], self.model.config.input_px, self.recipe.augment, gen).to(self.device)
        y = self.train_y[index].to(self.device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.model(x), y,
                                                                    pos_weight=self.pos_weight.to(self.device))
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {float(loss)} at step {self.step + 1}; lower the learning rate.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def validate(self, tta: bool, threshold: float | None = None) -> dict[str, Any]:
        """Validation p_atypical → the figures at ``threshold`` (None: the balanced-accuracy-maximising one)."""
        scores = []
        for start in range(0, len(self.val_x), 256):
            x = self.val_x[start : start + 256].float().div(255.0).to(self.device)
            scores.append(predict_proba(self.model, x, tta=tta).cpu())
        self.model.train()
        p = torch.cat(scores).tolist()
        if threshold is None:
            threshold, _ = best_threshold(self.val_y, p)
        return summary(self.val_y, p, self.val_sources, threshold)

    def _end_epoch(self) -> None:
        scores = self.validate(tta=False)
        self.history.append({"epoch": self.epoch, "step": self.step, **scores})
        save_classifier(self.model, self.out_dir / LAST_FILE, self._provenance())
        self._save_state()
        overall = scores["all"]
        self.progress.write("epoch", epoch=self.epoch, step=self.step, val_balanced_accuracy=overall["balanced_accuracy"],
                            val_auroc=overall["auroc"], threshold=scores["threshold"], val=scores)
        self._write_metrics("running", None)

    def _cancel(self) -> AtypicalResult:
        self._save_state()
        self.progress.write("cancelled", step=self.step, epoch=self.epoch)
        self._write_metrics("cancelled", None)
        return AtypicalResult("cancelled", self.out_dir, self.epoch, self.step)

    def _finish(self) -> AtypicalResult:
        final = self.validate(tta=self.model.config.tta)
        with_threshold(self.model, final["threshold"])
        save_classifier(self.model, self.out_dir / MODEL_FILE,
                        self._provenance(validation=final, threshold_chosen_on="validation balanced accuracy"))
        self._write_metrics("done", final)
        self.progress.write("done", step=self.step, epoch=self.epoch, threshold=final["threshold"],
                            val_balanced_accuracy=final["all"]["balanced_accuracy"], val_auroc=final["all"]["auroc"],
                            model=MODEL_FILE)
        return AtypicalResult("done", self.out_dir, self.epoch, self.step, final["threshold"], final)

    def _write_metrics(self, status: str, final: dict[str, Any] | None) -> None:
        metrics = {"status": status, "epochs_done": self.epoch, "step": self.step,
                   "metric": "balanced accuracy at the validation-chosen threshold; AUROC",
                   "final_tta": final, "baseline": self.baseline, "history": self.history}
        atomic.write_text(self.out_dir / METRICS_FILE, json.dumps(metrics, indent=1))


def _load_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file() or not (run_dir / STATE_FILE).is_file():
        raise TrainingError(f"{run_dir} is not an atypical run folder that can be resumed (no {RUN_FILE} and {STATE_FILE}).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{path} is damaged: {exc}.") from exc


def _load_state(run_dir: Path) -> dict[str, Any]:
    """The saved training state, read as weights only and checked as ``train``'s is; else one TrainingError."""
    state = load_weights_only(run_dir / STATE_FILE, error=TrainingError)
    fits = (
        isinstance(state, dict)
        and all(isinstance(state.get(k), dict) for k in ("model", "optimizer"))
        and all(isinstance(state.get(k), int) and state[k] >= 0 for k in ("step", "epoch", "batch_in_epoch"))
        and isinstance(state.get("history"), list)
    )
    if not fits:
        raise TrainingError(f"{run_dir / STATE_FILE} is not the training state midog-viewer saves.")
    return state
