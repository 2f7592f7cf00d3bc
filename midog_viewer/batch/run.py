"""Run a cohort on a dask cluster: plan each slide on a worker, detect batches of tiles, store as they finish.

The client is the only writer of the review store. Each finished batch is committed with its ledger rows
(:mod:`midog_viewer.batch.ledger`), so a run stopped at any moment resumes with exactly the unfinished
tiles, and a slide already finished with the same model and settings is skipped without detection. A slide
that cannot be read, or whose tiles fail, fails alone; a worker that dies is dask's to reschedule.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.batch.ledger import Ledger, LedgerRun
from midog_viewer.batch.plan import TILES_PER_TASK, work_units
from midog_viewer.batch.progress import Progress
from midog_viewer.batch.report import DONE, FAILED, SKIPPED, SlideRow, counted_row
from midog_viewer.batch.worker import detect_task, plan_task
from midog_viewer.detect.detections import Detections
from midog_viewer.detect.tiling import drop_duplicates_of
from midog_viewer.errors import MidogError
from midog_viewer.review.store import ReviewStore

#: Same IoU as the detector's seam merge: a box repeating one of an earlier batch of the slide is dropped.
DUPLICATE_IOU = 0.5


def run_key(model: str | None, score_thr: float | None) -> str:
    """What makes two runs the same: the model file (path, size, mtime) and the score threshold asked for.

    ``None`` names the checkpoint ``Detector(None)`` loads (the built-in model).
    """
    from midog_viewer.detect.models import default_model_for

    path = Path(model).expanduser().resolve() if model else default_model_for(None).path
    try:
        stat = path.stat()
        identity: list[Any] = [str(path), stat.st_size, int(stat.st_mtime)]
    except OSError:
        identity = [str(path)]
    return json.dumps({"model": identity, "score_thr": score_thr}, sort_keys=True)


def describe(exc: BaseException) -> str:
    """One line for a slide's failure: our own message as it is, anything else with its type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, MidogError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def needs_workers(store: ReviewStore, slides: list[Path], key: str) -> bool:
    """Whether any slide lacks a finished run with these settings (else no cluster needs to start)."""
    ledger = Ledger(store)
    for path in slides:
        try:  # the same registration as the run's (path, size and mtime name the file version)
            run = ledger.latest(store.add_slide(path), key)
        except MidogError:
            return True
        if run is None or not run.finished:
            return True
    return False


@dataclass
class _Slide:
    """A slide's state in this run."""

    index: int
    path: Path
    slide_id: int | None = None
    run: LedgerRun | None = None
    started: float = field(default_factory=time.monotonic)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: list[str] = field(default_factory=list)
    futures: set[Any] = field(default_factory=set)
    closed: bool = False


@dataclass
class CohortResult:
    """The report rows (in input order) and how many tiles this run detected."""

    rows: list[SlideRow]
    tiles_detected: int = 0

    @property
    def failed(self) -> list[SlideRow]:
        return [row for row in self.rows if row.status == FAILED]


def _fresh(boxes: np.ndarray, labels: list[str], earlier: np.ndarray, earlier_labels: list[str]) -> np.ndarray:
    """Which of ``boxes`` do not repeat a box of an earlier batch of the slide (same class, IoU > 0.5)."""
    if not len(boxes) or not len(earlier):
        return np.ones(len(boxes), bool)
    names = tuple(sorted(set(labels) | set(earlier_labels)))
    index = {name: i for i, name in enumerate(names)}
    new = Detections(boxes, np.zeros(len(boxes)), [index[n] for n in labels], names)
    old = Detections(earlier, np.zeros(len(earlier)), [index[n] for n in earlier_labels], names)
    tagged = Detections(new.boxes, np.arange(len(boxes), dtype=np.float32), new.labels, names)
    kept = drop_duplicates_of(tagged, old, DUPLICATE_IOU)
    mask = np.zeros(len(boxes), bool)
    mask[kept.scores.astype(np.int64)] = True
    return mask


class CohortRun:
    """One pass over ``slides`` with a client whose workers carry the detector plugin."""

    def __init__(self, client: Any, store: ReviewStore, slides: list[Path], key: str, model_label: str,
                 progress: Progress | None = None, tiles_per_task: int = TILES_PER_TASK,
                 on_commit: Callable[[Path, int], None] | None = None, plugin: str | None = None,
                 resources: dict[str, float] | None = None) -> None:
        """``client`` may be None when :func:`needs_workers` says no slide needs detecting; ``plugin`` names the
        workers' detector plugin and ``resources`` what each task asks of its worker (defaults: what
        :func:`~midog_viewer.batch.cluster.start` registered)."""
        self.client, self.store, self.slides, self.key = client, store, slides, key
        self.plugin = plugin or getattr(client, "midog_plugin", None)
        self.resources = resources if resources is not None else getattr(client, "midog_resources", None)
        self.model_label = model_label
        self.ledger = Ledger(store)
        self.progress = progress or Progress(len(slides), quiet=True)
        self.tiles_per_task = tiles_per_task
        self.on_commit = on_commit
        self.rows: list[SlideRow | None] = [None] * len(slides)
        self.tiles_detected = 0
        self._jobs: dict[Any, tuple[_Slide, str, list[int]]] = {}
        self._pending: Any = None

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> CohortResult:
        """Detect every slide not finished yet; return the report rows."""
        try:
            for index, path in enumerate(self.slides):
                self._begin(_Slide(index, path))
            for future in self._pending or ():  # None: nothing was submitted (every slide finished or failed)
                job = self._jobs.pop(future, None)
                if job is None:  # cancelled with its failed slide
                    continue
                state, kind, tiles = job
                state.futures.discard(future)
                if state.closed:
                    continue
                try:
                    if future.status != "finished":
                        future.result()  # raises the task's error
                    if kind == "plan":
                        self._planned(state, future.result())
                    else:
                        self._detected(state, tiles, future.result())
                except Exception as exc:  # this slide's problem only
                    self._fail(state, exc)
        finally:
            outstanding = list(self._jobs)
            if outstanding:
                self.client.cancel(outstanding)
            self.progress.close()
        return CohortResult([row for row in self.rows if row is not None], self.tiles_detected)

    def _priority(self, state: _Slide) -> int:
        return len(self.slides) - state.index  # earlier slides first, so few are under way at once

    def _submit(self, state: _Slide, kind: str, tiles: list[int], fn: Callable, *args: Any) -> None:
        from distributed import as_completed

        future = self.client.submit(fn, *args, pure=False, priority=self._priority(state), resources=self.resources)
        if self._pending is None:
            self._pending = as_completed()
        self._jobs[future] = (state, kind, tiles)
        state.futures.add(future)
        self._pending.add(future)

    def _begin(self, state: _Slide) -> None:
        try:
            state.slide_id = self.store.add_slide(state.path)
            run = self.ledger.latest(state.slide_id, self.key)
        except MidogError as exc:
            self._fail(state, exc)
            return
        if run is not None and run.finished:
            self._close(state, counted_row(self.store, state.slide_id, state.path.name, SKIPPED, run.plan, 0.0))
            return
        if run is None:
            self._submit(state, "plan", [], plan_task, self.plugin, str(state.path))
            return
        state.run = run  # resume: what this run already stored is what later batches must not repeat
        table = self.store.objects(state.slide_id, run_id=run.run_id)
        detections = table.select(table.kind == "detection")
        state.boxes, state.labels = detections.boxes.astype(np.float32), [str(v) for v in detections.label]
        self._submit_tiles(state)

    def _submit_tiles(self, state: _Slide) -> None:
        run = state.run
        assert run is not None and state.slide_id is not None
        plan = run.plan
        pending = [i for i in range(len(plan["tiles"])) if i not in run.done]
        if not pending:
            self._finish(state)
            return
        self.progress.add_tiles(len(pending))
        for unit in work_units(pending, self.tiles_per_task):
            self._submit(state, "detect", unit, detect_task, self.plugin, str(state.path), [plan["tiles"][i] for i in unit],
                         [plan["cores"][i] for i in unit], plan["od_matrix"], plan["zoom"])

    # -- results ----------------------------------------------------------------------------------

    def _planned(self, state: _Slide, plan: dict[str, Any]) -> None:
        slide_id = self.store.add_slide(state.path, plan["mpp"], plan["width"], plan["height"])
        state.slide_id = slide_id
        params = {"source": "batch", "region": [0, 0, plan["width"], plan["height"]], "score_thr": plan["score_thr"],
                  "stain_normalize": plan["stain_normalize"], "resample_zoom": plan["zoom"],
                  "tissue_fraction": plan["tissue_fraction"], "tiles": len(plan["tiles"]),
                  "planned_tiles": plan["planned_tiles"]}
        model = Path(plan["model"]).name if plan.get("model") else self.model_label  # what the worker loaded
        state.run = self.ledger.start(slide_id, self.key, model, params, plan, plan.get("atypical_threshold"))
        self._submit_tiles(state)

    def _detected(self, state: _Slide, tiles: list[int], result: tuple[Any, ...]) -> None:
        run = state.run
        assert run is not None
        boxes = np.asarray(result[0], np.float32).reshape(-1, 4)
        scores, labels = np.asarray(result[1], np.float64).reshape(-1), list(result[2])
        p = np.asarray(result[3] if len(result) > 3 and len(result[3]) else np.full(len(boxes), np.nan), np.float64)
        fresh_tiles = [t for t in tiles if t not in run.done]
        if len(fresh_tiles) < len(tiles):  # some tiles finished by another copy of this batch: keep them once
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            keep = np.zeros(len(boxes), bool)
            for t in fresh_tiles:
                x0, y0, x1, y1 = run.plan["cores"][t]
                keep |= (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
            boxes, scores, labels, p = boxes[keep], scores[keep], [lab for lab, k in zip(labels, keep) if k], p[keep]
        if not fresh_tiles:
            return
        new = _fresh(boxes, labels, state.boxes, state.labels)
        boxes, scores, labels, p = boxes[new], scores[new], [lab for lab, k in zip(labels, new) if k], p[new]
        self.ledger.commit_tiles(run, fresh_tiles, boxes, scores, labels, p)
        state.boxes = np.concatenate([state.boxes, boxes])
        state.labels += labels
        self.tiles_detected += len(fresh_tiles)
        self.progress.tiles(len(fresh_tiles))
        if self.on_commit is not None:
            self.on_commit(state.path, len(fresh_tiles))
        if len(run.done) == len(run.plan["tiles"]):
            self._finish(state)

    def _finish(self, state: _Slide) -> None:
        run = state.run
        assert run is not None and state.slide_id is not None
        self.ledger.finish(run)
        self._close(state, counted_row(self.store, state.slide_id, state.path.name, DONE, run.plan,
                                       time.monotonic() - state.started))

    def _fail(self, state: _Slide, exc: BaseException) -> None:
        plan = state.run.plan if state.run is not None else {}
        row = SlideRow(state.path.name, FAILED, describe(exc), tissue_fraction=plan.get("tissue_fraction", ""),
                       tiles=len(plan["tiles"]) if plan else "", seconds=round(time.monotonic() - state.started, 2))
        if state.futures:
            self.client.cancel(list(state.futures))
            for future in state.futures:
                self._jobs.pop(future, None)
            state.futures.clear()
        self._close(state, row)

    def _close(self, state: _Slide, row: SlideRow) -> None:
        state.closed = True
        self.rows[state.index] = row
        if row.status == FAILED:
            message = f"{row.slide}: failed: {row.error}"
        else:
            message = (f"{row.slide}: {row.status}, {row.tiles} tiles, {row.mitoses} mitoses"
                       + (f", {row.seconds} s" if row.status == DONE else ""))
        self.progress.slide_finished(message)
