"""The scripted demo behind ``midog-viewer demo``: sample, demo model, one accept, one reject, a screenshot."""

from __future__ import annotations

import tempfile
from pathlib import Path

from midog_viewer.errors import ModelError

#: Window size of the demo, so the README picture has the same layout on every machine.
WINDOW_SIZE = (1600, 1000)


def run_demo(screenshot: str | Path | None, db: str | Path | None = None) -> int:
    """Open the synthetic sample with the demo model, detect what is on screen, decide twice, screenshot.

    Decisions go to ``db`` (default: a fresh temporary database, so the demo never touches the user's
    reviews). Without ``screenshot`` the viewer stays open for the user; with it the demo exits after saving.
    """
    from midog_viewer.detect.engine import DEMO_MODEL_PATH

    if not DEMO_MODEL_PATH.is_file():
        raise ModelError(f"the built-in demo model {DEMO_MODEL_PATH} is not there yet, so the demo cannot detect anything.")
    database = Path(db) if db else Path(tempfile.mkdtemp(prefix="midog-demo-")) / "demo-reviews.sqlite"

    import napari
    from qtpy.QtWidgets import QApplication

    from midog_viewer._qt.viewer import open_viewer, review_dock
    from midog_viewer.review.store import ReviewStore

    database.parent.mkdir(parents=True, exist_ok=True)
    store = ReviewStore(database)
    viewer = open_viewer(None, show=True, store=store)
    viewer.window.resize(*WINDOW_SIZE)
    widget = review_dock(viewer)
    if widget is None or widget.session is None or widget.detector is None:
        viewer.close()
        raise ModelError("the review dock could not load the demo model or the sample; see the message above.")
    QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()
    widget.detect_visible(wait=True)
    decided = 0
    for action in ("accept", "reject"):
        widget.step(forward=True)
        if widget.selected is not None:
            widget.decide(action)
            decided += 1
    widget.select(None)  # the cyan selection frame would hide the rejected box's red
    viewer.reset_view()
    widget.update_counts(wait=True)
    QApplication.processEvents()
    found = len(widget.overlay.predictions)
    print(f"demo: {found} detections drawn, {decided} decided, reviews in {database}")
    if screenshot is None:
        napari.run()
    else:
        viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
        print(f"demo: screenshot saved to {screenshot}")
        viewer.close()
    store.close()
    return 0
