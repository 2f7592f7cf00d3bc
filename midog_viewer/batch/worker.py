"""What runs on a dask worker: the model, loaded once per worker by a WorkerPlugin, and the two tasks.

:class:`DetectorPlugin` loads the detector when the worker starts (and again in a worker dask restarts)
and keeps a few slides open; :func:`plan_task` plans a slide, :func:`detect_task` detects one batch of
its tiles. Tasks return plain data; only the client writes the review store.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from midog_viewer.batch.plan import plan_slide

#: Prefix of the plugin's name; the rest is a digest of its settings, so two cohorts with different models
#: can share a cluster (each task names the detector it needs), and the same settings replace, not add.
PLUGIN_NAME = "midog-viewer-detector"
#: Slides a worker keeps open between batches (opening an SVS re-reads its directory).
_OPEN_SLIDES = 4


class DetectorPlugin(WorkerPlugin):
    """Loads one :class:`~midog_viewer.detect.Detector` per worker; pickled to the workers with its settings only."""

    def __init__(self, model: str | None, device: str | None, score_thr: float | None,
                 torch_threads: int | None = None, batch_size: int | None = None,
                 ignore_interrupt: bool = False, resources: dict[str, float] | None = None) -> None:
        settings = json.dumps([str(Path(model).expanduser().resolve()) if model else None, device, score_thr,
                               batch_size])
        self.name = f"{PLUGIN_NAME}-{hashlib.sha1(settings.encode()).hexdigest()[:12]}"
        self.model = model
        self.device = device
        self.score_thr = score_thr
        self.torch_threads = torch_threads
        self.batch_size = batch_size
        self.ignore_interrupt = ignore_interrupt
        self.resources = resources
        self.detector: Any = None
        self.classifier: Any = None  # the shipped atypical classifier: p_atypical of each mitotic figure
        self.load_error: Exception | None = None
        self._slides: OrderedDict[str, Any] = OrderedDict()

    def setup(self, worker: Any) -> None:
        import torch

        from midog_viewer.detect import Detector

        if self.ignore_interrupt and threading.current_thread() is threading.main_thread():
            # a local worker shares the terminal's process group: Ctrl-C is the client's to handle (it stops
            # the cluster), not a traceback from every worker process
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        device = self.device
        if device == "cuda" and torch.cuda.device_count() > 1:  # spread local workers over the GPUs
            index = worker.name if isinstance(worker.name, int) else abs(hash(str(worker.name)))
            device = f"cuda:{index % torch.cuda.device_count()}"
        self._slides = OrderedDict()
        try:
            self.detector = Detector(self.model, device=device, score_thr=self.score_thr, batch_size=self.batch_size)
            from midog_viewer.atypical import shared_classifier

            self.classifier = shared_classifier()
        except Exception as exc:
            if not self.resources:
                raise
            # a worker of a mixed cluster without the resource (a CPU worker for GPU tasks) never gets a task;
            # should one reach it, the task fails with this reason
            self.detector, self.load_error = None, exc

    def teardown(self, worker: Any) -> None:
        for slide in self._slides.values():
            slide.close()
        self._slides.clear()

    def slide(self, path: str) -> Any:
        """The slide at ``path``, opened once and kept among the last few used."""
        from midog_viewer.io import open_slide

        if path in self._slides:
            self._slides.move_to_end(path)
            return self._slides[path]
        slide = open_slide(Path(path))
        self._slides[path] = slide
        while len(self._slides) > _OPEN_SLIDES:
            self._slides.popitem(last=False)[1].close()
        return slide


def _plugin(name: str) -> DetectorPlugin:
    try:
        plugin = get_worker().plugins[name]
    except KeyError:  # pragma: no cover - the client registers the plugin before submitting
        raise RuntimeError(f"the detector plugin {name} is not registered on this worker") from None
    if plugin.detector is None and plugin.load_error is not None:
        raise plugin.load_error
    return plugin


def plan_task(plugin_name: str, path: str) -> dict[str, Any]:
    """Plan one slide (tissue, tiles, stain map, and the atypical classifier's threshold) on a worker."""
    plugin = _plugin(plugin_name)
    return {**plan_slide(plugin.detector, plugin.slide(path)), "atypical_threshold": plugin.classifier.config.threshold}


def detect_task(plugin_name: str, path: str, tiles: list[list[int]], cores: list[list[float]], od_matrix: Any,
                zoom: float) -> tuple[Any, Any, Any, Any]:
    """Detect one batch of a slide's tiles; boxes (N, 4) level-0 xyxy, scores, label names and p_atypical (NaN:
    not a mitotic figure)."""
    from midog_viewer.atypical import atypical_scores

    plugin = _plugin(plugin_name)
    slide = plugin.slide(path)
    found = plugin.detector.detect_tiles(slide, [tuple(t) for t in tiles], [tuple(c) for c in cores], od_matrix, zoom)
    p = atypical_scores(slide, found, plugin.classifier) if len(found) else []
    return found.boxes, found.scores, found.label_names(), p


def worker_peak_rss() -> int:
    """Peak resident memory of this process in bytes (benchmarks: client.run(worker_peak_rss))."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
