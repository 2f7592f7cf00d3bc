"""napari glue without Qt: the reader and the sample-data contributions named in ``napari.yaml``.

Both hand napari one multiscale RGB image layer whose levels are the slide's lazy arrays, so napari
reads only the tiles in view; napari's own (eager) readers are never involved. With a known pixel size
the layer's scale and units are micrometres, so the scale bar and coordinates read µm.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from midog_viewer.errors import MidogError
from midog_viewer.formats import midog_coco
from midog_viewer.io import Slide, open_slide
from midog_viewer.synthetic import sample_path

LayerData = tuple[Any, dict[str, Any], str]


def slide_layer_data(slide: Slide, **metadata: Any) -> LayerData:
    """The layer tuple napari adds for ``slide``: multiscale RGB, in µm when the pixel size is known."""
    kwargs: dict[str, Any] = {
        "name": slide.path.stem if slide.path.is_file() else slide.path.name,
        "multiscale": True,
        "rgb": True,
        "contrast_limits": (0, 255),
        "metadata": {"slide": slide, "path": str(slide.path), "mpp": slide.mpp, "format": slide.format, **metadata},
    }
    if slide.mpp is not None:
        kwargs["scale"] = (slide.mpp, slide.mpp)
        kwargs["units"] = ("µm", "µm")
    return (slide.levels, kwargs, "image")


#: File endings napari offers us (``napari.yaml``): an unreadable one gets our reason, not napari's "refused the file".
IMAGE_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".dcm")


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: a function returning the slide's layer, or None when ``path`` is not a slide we read.

    An image file of ours that cannot be read (16-bit, damaged) gets a reader that shows the one-line reason in
    napari's notification area and adds no layer.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        slide = open_slide(path)
    except MidogError as exc:
        if not (Path(path).is_file() and Path(path).suffix.lower() in IMAGE_SUFFIXES):
            return None
        return functools.partial(_refuse, str(exc))

    def read(_path: Any) -> list[LayerData]:
        return [slide_layer_data(slide)]

    return read


def _refuse(reason: str, _path: Any) -> list[tuple[None]]:
    from midog_viewer._qt import notify

    notify.show_error(reason)
    return [(None,)]  # napari's "nothing to add" sentinel: no layer, and no second message


def synthetic_sample() -> list[LayerData]:
    """npe2 sample-data hook: the built-in synthetic HPF, its ground truth in ``metadata["ground_truth"]``."""
    path = sample_path()
    truth = midog_coco.read(path.with_suffix(".json"))[0]
    ground_truth = {"boxes": truth.boxes.astype(np.float32), "labels": truth.labels}
    return [slide_layer_data(open_slide(path), ground_truth=ground_truth, ground_truth_path=str(path.with_suffix(".json")))]
