"""One slide under review, free of Qt: the store's objects as arrays, decisions, undo/redo, counts and F1.

The dock widget is a skin over this class: a key press becomes one call here, which writes the decision
to the :class:`~midog_viewer.review.store.ReviewStore` (committed before it returns), hands back the
rows whose colour changed and announces them on ``events`` (:mod:`midog_viewer.review.events`), which the
overlay and the counts follow. Detections and annotations have separate ids in the store; here both share one
integer *key* space: a detection's key is its id, an annotation's key minus its id.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from midog_viewer.review.navigation import boxes_in_region
from midog_viewer.classes import HARD_NEGATIVE, MITOTIC_FIGURE
from midog_viewer.errors import ReviewStoreError
from midog_viewer.evaluate import precision_recall_f1
from midog_viewer.review.counts import DEFAULT_HPF_MM2, SlideCounts, count_slide
from midog_viewer.review.evaluation_view import evaluation_table
from midog_viewer.review.events import ObjectsChanged, SessionEvents
from midog_viewer.review.status import Status, Verdict
from midog_viewer.review.records import SUBTYPE_UNKNOWN
from midog_viewer.review.store import HPFRegion, ObjectTable, ReviewStore

DETECTION = "detection"
ANNOTATION = "annotation"
#: Source name of ground truth that came with the image itself (the synthetic sample's labels).
IMAGE_TRUTH_SOURCE = "ground truth shipped with the image"
#: Side of the box a reviewer adds by clicking a missed mitosis (MIDOG's 50 px boxes).
ADDED_BOX_PX = 50.0

#: Overlap at which a new detection is the same object as one already stored (the engine's NMS IoU).
DUPLICATE_IOU = 0.5

#: Cell of the grid that finds duplicate candidates (px): boxes up to about twice this side are matched.
DUPLICATE_CELL = 256

#: Seconds without a write after which the dock's timer checkpoints the store (see checkpoint_if_idle).
IDLE_CHECKPOINT_S = 5.0

#: Reviewer actions by name: the verdict and, for a relabel, the new label.
ACTIONS: dict[str, tuple[Verdict, str | None]] = {
    "accept": (Verdict.ACCEPT, None),
    "reject": (Verdict.REJECT, None),
    "hard negative": (Verdict.RELABEL, HARD_NEGATIVE),
}


def default_db_path() -> Path:
    """Where reviews are kept: ``$MIDOG_VIEWER_DB``, else the user's data folder (XDG on Linux)."""
    override = os.environ.get("MIDOG_VIEWER_DB")
    if override:
        return Path(override).expanduser()
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "midog-viewer" / "reviews.sqlite"


def open_default_store(reviewer: str | None = None) -> ReviewStore:
    """The review store at :func:`default_db_path`, creating its folder."""
    path = default_db_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReviewStoreError(f"cannot create the review folder {path.parent}: {exc.strerror}.") from exc
    return ReviewStore(path, reviewer)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each xyxy box in ``a`` with the box in the same row of ``b``."""
    overlap_w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    overlap_h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    overlap = overlap_w * overlap_h
    areas = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return overlap / np.maximum(areas - overlap, 1e-9)


def _grid_cells(boxes: np.ndarray) -> np.ndarray:
    """Grid cell (column, row) of each box centre."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    return np.floor(centres / DUPLICATE_CELL).astype(np.int64)


def _cell_codes(cells: np.ndarray) -> np.ndarray:
    """One int64 per grid cell (column, row), cells from -1 on."""
    return (cells[:, 0] + 1) * (1 << 31) + (cells[:, 1] + 1)


def keys_of(table: ObjectTable) -> np.ndarray:
    """Overlay keys of a table's rows: detection id, or minus the annotation id."""
    return np.where(table.kind == DETECTION, table.id, -table.id).astype(np.int64)


class ReviewSession:
    """The review state of one slide: its objects (``table``), decisions and derived figures.

    ``table`` includes deleted annotations (a hand-added box whose "add" was undone) so that rows keep
    their place in the overlay; ``visible_mask`` hides them. Decisions are made, undone and redone as
    ``reviewer`` (default: the store's), who undoes only their own decisions. Every change is announced on
    ``events`` after the store has it.
    """

    def __init__(
        self,
        store: ReviewStore,
        slide_path: str | os.PathLike,
        *,
        width: int,
        height: int,
        mpp: float | None = None,
        ground_truth: dict | None = None,
        reviewer: str | None = None,
    ) -> None:
        self.store = store
        self.events = SessionEvents()
        self.reviewer = reviewer or store.reviewer
        self.width, self.height, self.mpp = int(width), int(height), mpp
        #: How the file was matched to its stored slide (moved, copied, changed: :mod:`~midog_viewer.review.slide_identity`).
        self.link = store.link_slide(slide_path, mpp, self.width, self.height)
        self.slide_id = self.link.slide_id
        if self.mpp is None:  # a PNG or JPEG frame: the pixel size a reviewer recorded for it earlier
            self.mpp = store.slide(self.slide_id).mpp
        if ground_truth is not None and len(ground_truth.get("boxes", [])):
            self._store_image_truth(ground_truth)
        self.reload()

    def _store_image_truth(self, ground_truth: dict) -> None:
        """Keep labels that came with the image as ground truth, once per slide."""
        table = self.store.objects(self.slide_id, include_deleted=True)
        if np.any((table.kind == ANNOTATION) & (table.source == IMAGE_TRUTH_SOURCE)):
            return
        labels = [str(label) for label in ground_truth["labels"]]
        self.store.add_annotations(self.slide_id, np.asarray(ground_truth["boxes"]), labels, IMAGE_TRUTH_SOURCE)

    # -- state ----------------------------------------------------------------------------------

    def set_mpp(self, mpp: float) -> None:
        """Record the pixel size (µm per pixel) of a slide whose file gives none; kept for later sessions."""
        self.store.set_slide_mpp(self.slide_id, mpp)
        self.mpp = float(mpp)

    def reload(self) -> None:
        """Read every object of the slide again (after an import, or when the slide is reopened)."""
        self.table = self.store.objects(self.slide_id, include_deleted=True)
        self.keys = keys_of(self.table)
        self._row_of = {int(k): row for row, k in enumerate(self.keys)}
        self.events.objects_changed.emit(ObjectsChanged(reloaded=True))

    def row_of(self, key: int) -> int:
        """The table row of an overlay key."""
        try:
            return self._row_of[int(key)]
        except KeyError as exc:
            raise ReviewStoreError(f"object {key} is not on this slide.") from exc

    def _append(self, rows: ObjectTable) -> np.ndarray:
        start = len(self.table)
        self.table = ObjectTable.concatenate([self.table, rows])
        new_keys = keys_of(rows)
        self.keys = np.concatenate([self.keys, new_keys])
        self._row_of.update({int(k): start + i for i, k in enumerate(new_keys)})
        self.events.objects_changed.emit(ObjectsChanged(added=new_keys))
        return new_keys

    def has_ground_truth(self) -> bool:
        """Whether the slide has imported (or shipped) ground truth."""
        return bool(np.any(self.table.status == Status.GROUND_TRUTH.value))

    def is_hard_negative_prediction(self) -> np.ndarray:
        """Rows the model called hard negative that no reviewer relabelled: drawn in the dim layer."""
        return (
            (self.table.kind == DETECTION)
            & (self.table.label == HARD_NEGATIVE)
            & (self.table.status != Status.RELABELLED.value)
        )

    def visible_mask(self, score_threshold: float) -> np.ndarray:
        """Rows to draw: decided objects always; pending detections at or above the threshold."""
        pending = self.table.status == Status.PENDING.value
        below = pending & (np.nan_to_num(self.table.score, nan=1.0) < score_threshold)
        return ~below & (self.table.status != Status.DELETED.value)

    def pending_mask(self, score_threshold: float) -> np.ndarray:
        """Rows still to judge: pending mitotic-figure predictions shown at the threshold (what Space steps to)."""
        t = self.table
        return ((t.kind == DETECTION) & (t.status == Status.PENDING.value) & (t.label == MITOTIC_FIGURE)
                & self.visible_mask(score_threshold))

    def review_progress(self, score_threshold: float) -> tuple[int, int]:
        """(reviewed, shown): mitotic-figure predictions shown at the threshold, and how many have a verdict."""
        t = self.table
        shown = (t.kind == DETECTION) & (t.label == MITOTIC_FIGURE) & self.visible_mask(score_threshold)
        return int((shown & (t.status != Status.PENDING.value)).sum()), int(shown.sum())

    # -- detection ------------------------------------------------------------------------------

    def start_run(self, model: str, params: dict, atypical_threshold: float | None = None) -> int:
        """Record a detection run on this slide (with the atypical classifier's threshold, if one scores it)."""
        return self.store.add_detection_run(self.slide_id, model, params, atypical_threshold)

    def add_detections(self, run_id: int, boxes: np.ndarray, scores: np.ndarray, labels: list[str],
                       p_atypical: np.ndarray | None = None) -> np.ndarray:
        """Store one batch of detections (with p_atypical, NaN where none) committed; return the rows' keys.

        A box overlapping a detection already on the slide by IoU ≥ 0.5 is dropped: the same mitosis seen
        again across a batch or view border (or a region analysed twice) is kept once, with its decisions.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        fresh = ~self._seen_before(boxes)
        boxes, scores = boxes[fresh], scores[fresh]
        labels = [label for label, keep in zip(labels, fresh) if keep]
        if p_atypical is not None:
            p_atypical = np.asarray(p_atypical, dtype=np.float64).reshape(-1)[fresh]
        if len(boxes) == 0:
            return np.zeros(0, dtype=np.int64)
        ids = self.store.add_detections(run_id, boxes, scores, labels, p_atypical)
        n = len(ids)
        p = np.full(n, np.nan) if p_atypical is None else p_atypical
        threshold = self._atypical_threshold(run_id)
        called = np.full(n, SUBTYPE_UNKNOWN, dtype=np.int8)
        if threshold is not None:
            known = ~np.isnan(p)
            called[known] = p[known] >= threshold
        rows = ObjectTable(
            id=np.asarray(ids, dtype=np.int64),
            kind=np.full(n, DETECTION, dtype=object),
            x1=boxes[:, 0].copy(), y1=boxes[:, 1].copy(), x2=boxes[:, 2].copy(), y2=boxes[:, 3].copy(),
            score=np.asarray(scores, dtype=np.float64).reshape(-1),
            label=np.asarray([str(label) for label in labels], dtype=object),
            status=np.full(n, Status.PENDING.value, dtype=object),
            source=np.full(n, "", dtype=object),
            run_id=np.full(n, run_id, dtype=np.int64),
            p_atypical=p, atypical=called,
        )
        return self._append(rows)

    def _atypical_threshold(self, run_id: int) -> float | None:
        """The atypical classifier's threshold a run recorded (None: no classifier scored it)."""
        runs = {run["id"]: run for run in self.store.detection_runs(self.slide_id)}
        return runs[run_id]["atypical_threshold"] if run_id in runs else None

    def _seen_before(self, boxes: np.ndarray, iou_threshold: float = DUPLICATE_IOU) -> np.ndarray:
        """Which boxes overlap a stored detection of this slide by ``iou_threshold`` or more.

        Pairs are only formed between boxes whose centres fall in neighbouring cells of a
        :data:`DUPLICATE_CELL` px grid, all in numpy, so a batch costs about the same against a hundred or a
        hundred thousand stored detections. (Within one batch the engine's NMS has merged duplicates already.)
        """
        best = np.zeros(len(boxes))
        known = self.table.boxes[self.table.kind == DETECTION]
        if len(boxes) == 0 or len(known) == 0:
            return best >= iou_threshold
        known_codes = _cell_codes(_grid_cells(known))
        order = np.argsort(known_codes, kind="stable")
        sorted_codes = known_codes[order]
        cells = _grid_cells(boxes)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                codes = _cell_codes(cells + (dx, dy))
                low = np.searchsorted(sorted_codes, codes, "left")
                counts = np.searchsorted(sorted_codes, codes, "right") - low
                total = int(counts.sum())
                if total == 0:
                    continue
                new_index = np.repeat(np.arange(len(boxes)), counts)
                within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
                partners = order[np.repeat(low, counts) + within]
                np.maximum.at(best, new_index, pairwise_iou(boxes[new_index], known[partners]))
        return best >= iou_threshold

    # -- decisions ------------------------------------------------------------------------------

    def decide(self, key: int, action: str) -> list[int]:
        """Apply ``accept``, ``reject`` or ``hard negative`` to an object; return the keys that changed.

        On a detection it is the reviewer's verdict; on an annotation added by hand, reject deletes it
        (undoable) and the other actions keep it; imported ground truth is not judged.
        """
        if action not in ACTIONS:
            raise ReviewStoreError(f"unknown review action {action!r}; use one of {', '.join(ACTIONS)}.")
        row = self.row_of(key)
        kind, object_id = self.table.kind[row], int(self.table.id[row])
        if kind == DETECTION:
            verdict, label = ACTIONS[action]
            self.store.decide(object_id, verdict, reviewer=self.reviewer, label=label)
        elif self.table.source[row] == "hand" and action == "reject":
            self.store.delete_annotation(object_id, reviewer=self.reviewer)
        else:
            return []
        self._refresh(row)
        self.events.objects_changed.emit(ObjectsChanged(keys=(int(key),)))
        return [int(key)]

    def toggle_atypical(self, key: int) -> list[int]:
        """Flip a mitotic figure's subtype, normal ↔ atypical (a logged "subtype" decision, undoable); the keys changed.

        The subtype flipped is the one shown: the reviewer's, else the model's call (unknown counts as normal).
        Refused, with the reason, for an object that is not a mitotic figure or no longer exists.
        """
        row = self.row_of(key)
        t = self.table
        if t.label[row] != MITOTIC_FIGURE or t.status[row] in (Status.REJECTED.value, Status.DELETED.value):
            raise ReviewStoreError(f"only a mitotic figure has a subtype; this box is {t.status[row]} {t.label[row]}.")
        self.store.decide_subtype(str(t.kind[row]), int(t.id[row]), t.atypical[row] != 1, reviewer=self.reviewer)
        self._refresh(row)
        self.events.objects_changed.emit(ObjectsChanged(keys=(int(key),)))
        return [int(key)]

    def add_mitosis(self, x: float, y: float, size: float = ADDED_BOX_PX) -> int:
        """Add a missed mitosis centred on level-0 ``(x, y)`` (an "add" decision); return its key."""
        half = size / 2
        box = [max(0.0, x - half), max(0.0, y - half), min(self.width, x + half), min(self.height, y + half)]
        annotation_id = self.store.add_annotation(self.slide_id, box, MITOTIC_FIGURE, reviewer=self.reviewer)
        rows = self.store.objects(self.slide_id, (box[0], box[1], box[2] - box[0], box[3] - box[1]))
        rows = rows.select((rows.kind == ANNOTATION) & (rows.id == annotation_id))
        return int(self._append(rows)[0])

    def undo(self) -> list[int]:
        """Undo this reviewer's latest decision on the slide; return the key that changed (none: nothing to undo)."""
        return self._undo_redo(self.store.undo_decision)

    def redo(self) -> list[int]:
        """Redo this reviewer's latest undone decision; return the key that changed."""
        return self._undo_redo(self.store.redo_decision)

    def nothing_to(self, action: str) -> str:
        """Why this reviewer's ``action`` ("undo" or "redo") changed nothing: one line for the status bar."""
        overruled = self.store.replayed(self.slide_id).overruled(self.reviewer) if action == "undo" else 0
        if overruled:
            return (f"Nothing of yours ({self.reviewer}) to undo: your {overruled} remaining decision(s) on this slide "
                    "were overridden by another reviewer's later ones, which stand.")
        return f"Nothing of yours ({self.reviewer}) to {action} on this slide."

    def _undo_redo(self, step) -> list[int]:
        written = step(self.slide_id, self.reviewer)
        if written is None:
            return []
        key = written.object_id if written.object_kind == DETECTION else -written.object_id
        if int(key) not in self._row_of:
            self.reload()
        self._refresh(self.row_of(key))
        self.events.objects_changed.emit(ObjectsChanged(keys=(int(key),)))
        return [int(key)]

    def _refresh(self, row: int) -> None:
        """Read one object's status and label back from the store."""
        t = self.table
        region = (t.x1[row], t.y1[row], t.x2[row] - t.x1[row], t.y2[row] - t.y1[row])
        found = self.store.objects(self.slide_id, region, include_deleted=True)
        match = np.flatnonzero((found.kind == t.kind[row]) & (found.id == t.id[row]))
        if len(match) == 0:
            raise ReviewStoreError(f"object {t.kind[row]} {t.id[row]} vanished from {self.store.path.name}.")
        t.take_decided(row, found, int(match[0]))

    # -- counted fields (HPFs) ---------------------------------------------------------------------

    def hpf_regions(self) -> list[HPFRegion]:
        """The fields marked on this slide, oldest first."""
        return self.store.hpf_regions(self.slide_id)

    def mark_hpf(self, region: tuple[float, float, float, float]) -> int:
        """Store one counted field (an identical one is kept once); return its id."""
        hpf_id = self.store.add_hpf(self.slide_id, region)
        self.events.hpfs_changed.emit(self.hpf_regions())
        return hpf_id

    def replace_hpfs(self, regions: list[tuple[float, float, float, float]]) -> list[HPFRegion]:
        """Make the marked fields exactly ``regions`` (x, y, w, h), in one transaction: all or nothing.

        Fields already stored (within half a pixel) keep their ids; regions under one pixel wide or high
        (a click, not a drawn field) are left out. Returns the fields now stored.
        """
        wanted = [tuple(map(float, r)) for r in regions if r[2] >= 1 and r[3] >= 1]
        with self.store.transaction():  # nested writes join it: one COMMIT, or one ROLLBACK
            for old in self.hpf_regions():
                match = [i for i, r in enumerate(wanted) if np.allclose(r, (old.x, old.y, old.w, old.h), atol=0.5)]
                if match:
                    wanted.pop(match[0])
                else:
                    self.store.delete_hpf(old.id)
            for region in wanted:
                self.store.add_hpf(self.slide_id, region)
        fields = self.hpf_regions()
        self.events.hpfs_changed.emit(fields)
        return fields

    # -- keeping the file current -----------------------------------------------------------------

    def checkpoint_if_idle(self, idle_s: float = IDLE_CHECKPOINT_S) -> bool:
        """Copy the write-ahead log into the database file once nothing was written for ``idle_s`` seconds.

        The dock calls this on a timer, so a plain copy of ``reviews.sqlite`` made while it is open is current.
        """
        return self.store.checkpoint_if_idle(idle_s)

    def close(self) -> bool:
        """End the review of this slide: checkpoint, so the database file alone holds every decision.

        Best effort (True when the whole log went in): every decision is safe in the write-ahead log already.
        """
        try:
            return self.store.checkpoint()
        except ReviewStoreError:
            return False

    # -- figures --------------------------------------------------------------------------------

    def counts(self, region: tuple[float, float, float, float] | None = None, hpf_mm2: float = DEFAULT_HPF_MM2,
               use_drawn: bool = False, store: ReviewStore | None = None,
               objects: ObjectTable | None = None) -> SlideCounts:
        """``count_slide`` over a region (None: the whole image), with this slide's pixel size.

        ``store`` is another connection to the same database (a background reader), so counting does not
        hold the writer's lock while a decision waits; ``objects``, this slide's rows read from it once for
        several counts.
        """
        return count_slide(store or self.store, self.slide_id, hpf_mm2=hpf_mm2, region=region, use_drawn=use_drawn,
                           mpp=self.mpp, objects=objects)

    def pending_count(self, score_threshold: float, region: tuple[float, float, float, float] | None = None) -> int:
        """Pending mitotic-figure detections at or above the threshold (centre in ``region``): those on screen.

        ``count_slide`` counts every stored candidate as pending; the reviewer sees only those above the
        slider, so the panel shows this number instead.
        """
        t = self.table
        mask = (
            (t.kind == DETECTION) & (t.label == MITOTIC_FIGURE) & (t.status == Status.PENDING.value)
            & (t.score >= score_threshold)
        )
        if region is not None:
            mask &= boxes_in_region(t.boxes, region)
        return int(mask.sum())

    def evaluation(self, score_threshold: float, region: tuple[float, float, float, float] | None = None,
                   store: ReviewStore | None = None) -> tuple[dict, dict[int, str]]:
        """MIDOG TP/FP/FN, precision, recall and F1 against the ground truth, counted in ``region``.

        Matching runs over the whole slide (:func:`~midog_viewer.review.evaluation_view.evaluation_table`);
        also returns the evaluation status (matched / unmatched / ground truth / missed) of every key.
        """
        table = evaluation_table(store or self.store, self.slide_id, score_threshold=score_threshold)
        statuses = dict(zip(keys_of(table).tolist(), table.status.tolist()))
        inside = np.ones(len(table), dtype=bool) if region is None else boxes_in_region(table.boxes, region)
        status = table.status[inside]
        tp = int(np.sum(status == Status.MATCHED.value))
        fp = int(np.sum(status == Status.UNMATCHED.value))
        fn = int(np.sum(status == Status.MISSED.value))
        return {"tp": tp, "fp": fp, "fn": fn, **precision_recall_f1(tp, fp, fn)}, statuses
