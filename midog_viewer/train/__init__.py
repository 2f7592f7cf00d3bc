"""Training the detector on reviewed labels, MIDOG COCO files or synthetic figures (no Qt, no napari).

:func:`train` runs one training process and writes a run folder; :class:`DataSpec` names its data,
:class:`Recipe` its hyper-parameters (the seed's by default); :class:`ProgressReader` tails its progress.
"""

from midog_viewer.train.data import DataSpec, Split, gather
from midog_viewer.train.patches import PatchDataset
from midog_viewer.train.progress import ProgressReader, ProgressWriter, read_progress
from midog_viewer.train.recipe import Augmenter, Recipe
from midog_viewer.train.run import RunResult, saved_recipe, train
from midog_viewer.train.sources import LabelledImage

__all__ = [
    "Augmenter",
    "DataSpec",
    "LabelledImage",
    "PatchDataset",
    "ProgressReader",
    "ProgressWriter",
    "Recipe",
    "RunResult",
    "Split",
    "gather",
    "read_progress",
    "saved_recipe",
    "train",
]
