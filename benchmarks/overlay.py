"""How fast the review overlay is with 100,000 detections, against napari Shapes in the same run.

Prints one JSON object. For each approach ("points": our ``BoxLayer``; "shapes": napari Shapes
rectangles, the baseline): seconds to add the boxes to a viewer that already shows a slide (Python side,
and until the first frame is drawn), seconds to recolour one box after a decision and draw it, and the
latency from a key press on the canvas to the end of the redraw that shows the new colour. The view is
the canvas zoomed to level 0 (what a reviewer looks at); frame times at level 0 and with the whole slide
on screen are reported too.
"review_dock" repeats add and key → redraw through the review dock itself (decisions written to a
temporary review store, the next box centred by N). Targets (issue 5): add ≤ 1 s, recolour ≤ 0.2 s, key → redraw ≤ 50 ms.

Run it with a display (``xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/overlay.py``); under
Xvfb the frames are drawn by Mesa's software renderer, so frame times are an upper bound of a GPU's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

SLIDE_SIZE = 40_000
BOX = 50
TARGETS = {"add_s": 1.0, "recolour_s": 0.2, "key_to_redraw_s": 0.05}


def _boxes(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, SLIDE_SIZE - BOX, (count, 2)).astype(np.float32)
    return np.concatenate([corners, corners + BOX], axis=1)


class _Frames:
    """Draws the canvas and times frames; waits for the draw that follows an event."""

    def __init__(self, viewer) -> None:
        from qtpy.QtWidgets import QApplication

        self.app = QApplication.instance()
        self.canvas = viewer.window._qt_viewer.canvas
        self.scene_canvas = self.canvas._scene_canvas
        self.draws = 0
        self.scene_canvas.events.draw.connect(self._count, position="last")

    def _count(self, _event) -> None:
        self.draws += 1

    def draw_now(self) -> None:
        self.app.processEvents()
        self.scene_canvas.render()

    def wait_for_draw(self, since: int, timeout: float = 60.0) -> None:
        """Let Qt run until a frame after ``since`` has been drawn (the canvas's paint event)."""
        deadline = time.perf_counter() + timeout
        while self.draws <= since and time.perf_counter() < deadline:
            self.app.processEvents()
        self.scene_canvas.context.finish()


def _points_case(viewer, frames: _Frames, boxes: np.ndarray) -> dict:
    from midog_viewer._qt.overlay import BoxLayer

    yellow = np.array([1.0, 1.0, 0.0, 1.0], dtype=np.float32)
    red = np.array([[1.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    count = len(boxes)
    box_layer = BoxLayer(viewer, "points overlay")
    _zoom_to_level0(viewer, frames)
    frames.draw_now()
    start = time.perf_counter()
    box_layer.set_boxes(
        np.arange(count), boxes, np.tile(yellow, (count, 1)), np.ones(count, np.float32),
        ["mitotic figure"] * count, ["pending"] * count,
    )
    python_s = time.perf_counter() - start
    frames.draw_now()
    add_s = time.perf_counter() - start

    since = frames.draws
    start = time.perf_counter()
    box_layer.recolour([count // 2], red, ["rejected"])
    recolour_update_s = time.perf_counter() - start
    frames.wait_for_draw(since)
    recolour_s = time.perf_counter() - start

    since = frames.draws
    start = time.perf_counter()
    border = np.array(box_layer.layer.border_color)
    border[count // 3] = red[0]
    box_layer.layer.border_color = border
    frames.wait_for_draw(since)
    public_setter_s = time.perf_counter() - start

    target = iter(range(count))

    def reject_next(_viewer=None):
        box_layer.recolour([next(target)], red, ["rejected"])

    key_s = _key_latency(viewer, frames, reject_next)
    frame_s = _frame_times(viewer, frames)
    viewer.layers.remove(box_layer.layer)
    return {
        "add_s": add_s, "add_python_s": python_s, "recolour_s": recolour_s, "recolour_update_s": recolour_update_s,
        "recolour_public_setter_s": public_setter_s, "key_to_redraw_s": key_s, **frame_s,
    }


def _shapes_case(viewer, frames: _Frames, boxes: np.ndarray) -> dict:
    count = len(boxes)
    rectangles = np.stack([boxes[:, [1, 0]], boxes[:, [3, 2]]], axis=1)
    _zoom_to_level0(viewer, frames)
    frames.draw_now()
    start = time.perf_counter()
    layer = viewer.add_shapes(
        list(rectangles), shape_type="rectangle", edge_color="yellow", face_color="transparent",
        edge_width=3, name="shapes overlay",
    )
    python_s = time.perf_counter() - start
    frames.draw_now()
    add_s = time.perf_counter() - start

    def reject(index: int) -> None:
        colours = np.array(layer.edge_color)
        colours[index] = [1.0, 0.0, 0.0, 1.0]
        layer.edge_color = colours

    since = frames.draws
    start = time.perf_counter()
    reject(count // 2)
    recolour_update_s = time.perf_counter() - start
    frames.wait_for_draw(since)
    recolour_s = time.perf_counter() - start

    target = iter(range(count))
    key_s = _key_latency(viewer, frames, lambda _viewer=None: reject(next(target)))
    frame_s = _frame_times(viewer, frames)
    viewer.layers.remove(layer)
    return {"add_s": add_s, "add_python_s": python_s, "recolour_s": recolour_s, "recolour_update_s": recolour_update_s,
            "key_to_redraw_s": key_s, **frame_s}


class _FakeSlide:
    """What the review dock reads of a slide, for a 40,000 px square one that is never read."""

    def __init__(self, path) -> None:
        self.path, self.width, self.height, self.mpp = path, SLIDE_SIZE, SLIDE_SIZE, 0.25


def _widget_case(viewer, frames: _Frames, boxes: np.ndarray, workdir) -> dict:
    """The review dock itself: 100,000 stored detections, then A (accept, stored) and N (next) by key."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from midog_viewer._qt.review_widget import ReviewWidget
    from midog_viewer.review.store import ReviewStore

    store = ReviewStore(workdir / "bench.sqlite")
    widget = ReviewWidget(viewer, detector=None, store=store)
    slide_file = workdir / "slide.tif"
    slide_file.write_bytes(b"placeholder")
    thumbnail = np.full((256, 256, 3), 230, dtype=np.uint8)
    layer = viewer.add_image(thumbnail, rgb=True, scale=(SLIDE_SIZE / 256 * 0.25,) * 2, name="bench slide")
    layer.metadata["slide"] = _FakeSlide(slide_file)
    widget.bind_slide(layer)
    run = widget.session.start_run("benchmark", {})
    start = time.perf_counter()
    keys = store.add_detections(run, boxes, np.full(len(boxes), 0.9), ["mitotic figure"] * len(boxes))
    store_s = time.perf_counter() - start
    start = time.perf_counter()
    widget.session.reload()  # the overlay follows the session's event: every box drawn
    frames.draw_now()
    add_s = time.perf_counter() - start
    widget.step()
    frames.draw_now()
    timings = {"a": [], "n": []}
    for _ in range(5):
        for key, qt_key in (("a", Qt.Key_A), ("n", Qt.Key_N)):
            since = frames.draws
            start = time.perf_counter()
            QTest.keyClick(frames.canvas.native, qt_key)
            frames.wait_for_draw(since)
            timings[key].append(time.perf_counter() - start)
    decided = int((widget.session.table.status == "accepted").sum())
    widget.close()
    store.close()
    return {"detections": len(keys), "store_add_s": store_s, "add_s": add_s, "accepted_by_key": decided,
            "key_a_accept_to_redraw_s": float(np.median(timings["a"])),
            "key_n_next_to_redraw_s": float(np.median(timings["n"]))}


def _zoom_to_level0(viewer, frames: _Frames):
    """Centre the camera on the slide at one screen pixel per level-0 pixel; return the level-0 region shown."""
    from midog_viewer.review.navigation import view_region

    viewer.scene.camera.center = (SLIDE_SIZE / 2, SLIDE_SIZE / 2)
    viewer.scene.camera.zoom = 1.0
    frames.draw_now()
    return view_region(viewer.scene.camera.center, viewer.scene.camera.zoom, frames.canvas.size, (1.0, 1.0),
                       (SLIDE_SIZE, SLIDE_SIZE))


def _key_latency(viewer, frames: _Frames, action, repeats: int = 5) -> float:
    """Median seconds from a key press on the canvas to the end of the frame drawn after it."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    _zoom_to_level0(viewer, frames)
    viewer.bind_key("j", action, overwrite=True)
    timings = []
    for _ in range(repeats):
        since = frames.draws
        start = time.perf_counter()
        QTest.keyClick(frames.canvas.native, Qt.Key_J)
        frames.wait_for_draw(since)
        timings.append(time.perf_counter() - start)
    viewer.bind_key("j", None, overwrite=True)
    return float(np.median(timings))


def _frame_times(viewer, frames: _Frames) -> dict:
    """Seconds to draw one frame at level 0 (one HPF on screen) and with the whole slide on screen."""
    out = {}
    for name, zoom in (("frame_level0_s", 1.0), ("frame_whole_slide_s", 1000 / SLIDE_SIZE)):
        viewer.scene.camera.center = (SLIDE_SIZE / 2, SLIDE_SIZE / 2)
        viewer.scene.camera.zoom = zoom
        frames.draw_now()
        start = time.perf_counter()
        frames.scene_canvas.render()
        out[name] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="detections on the slide (default 100000)")
    parser.add_argument("--shapes-count", type=int, default=None,
                        help="boxes for the Shapes baseline (default: --count; it takes minutes at 100000)")
    args = parser.parse_args()

    import napari
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1100)
    thumbnail = np.full((256, 256, 3), 230, dtype=np.uint8)
    viewer.add_image(thumbnail, rgb=True, scale=(SLIDE_SIZE / 256, SLIDE_SIZE / 256), name="slide")
    frames = _Frames(viewer)
    frames.draw_now()

    boxes = _boxes(args.count)
    points = _points_case(viewer, frames, boxes)
    shapes_count = args.shapes_count or args.count
    shapes = _shapes_case(viewer, frames, _boxes(shapes_count))
    viewer.layers.clear()
    with tempfile.TemporaryDirectory() as workdir:
        widget = _widget_case(viewer, frames, boxes, Path(workdir))
    from vispy.gloo import gl

    frames.scene_canvas.set_current()
    renderer = gl.glGetParameter(gl.GL_RENDERER)
    result = {
        "benchmark": "overlay",
        "count": args.count,
        "shapes_count": shapes_count,
        "canvas": list(frames.canvas.size),
        "gl_renderer": renderer,
        "machine": platform.processor() or platform.machine(),
        "targets": TARGETS,
        "points": points,
        "review_dock": widget,
        "shapes": shapes,
        "points_meets_targets": {key: points[key] <= limit for key, limit in TARGETS.items()},
        "speedup_vs_shapes": {
            key: (shapes[key] / points[key]) * (args.count / shapes_count if key.startswith("add") else 1)
            for key in ("add_s", "recolour_s", "key_to_redraw_s")
        },
    }
    print(json.dumps(result, indent=2))
    viewer.close()


if __name__ == "__main__":
    main()
