"""The review core: the decision store, status colours and counts per high-power field (no Qt, no napari)."""

from midog_viewer.review.connection import refuse_database_target
from midog_viewer.review.status import Status, Verdict, colour_for
from midog_viewer.review.store import HPFRegion, ObjectTable, ReviewStore, Slide

__all__ = [
    "HPFRegion", "ObjectTable", "ReviewStore", "Slide", "Status", "Verdict", "colour_for", "refuse_database_target",
]
