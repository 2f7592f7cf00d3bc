"""What a reviewer decided about an object, and the colour every view draws it in.

Review colouring (a slide under review):

* a prediction not reviewed yet (``PENDING``) is **yellow**;
* an accepted prediction, an annotation added by hand, or imported ground truth is **white**;
* a rejected prediction, or one relabelled to a class other than "mitotic figure", is **red**.

Evaluation colouring (ground truth loaded instead of a review, see
:func:`midog_viewer.review.evaluation_view.evaluation_table`): a mitotic-figure prediction matched to a
ground-truth mitosis by the MIDOG rule is ``MATCHED`` (yellow), an unmatched one ``UNMATCHED`` (red),
and ground truth is white (``GROUND_TRUTH`` when found, ``MISSED`` when no prediction hit it: a white
box with no yellow one on it).
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """The current state of a detection or annotation, derived from the decision log."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RELABELLED = "relabelled"
    GROUND_TRUTH = "ground truth"
    DELETED = "deleted"
    MATCHED = "matched"
    UNMATCHED = "unmatched"
    MISSED = "missed"


#: Statuses of the labels a review produced (what exports and training take as labelled).
REVIEWED_STATUSES: tuple[str, ...] = (Status.ACCEPTED.value, Status.GROUND_TRUTH.value, Status.RELABELLED.value)


class Kind(str, Enum):
    """What an object of the store is: a model's detection or an annotation (imported or added by hand)."""

    DETECTION = "detection"
    ANNOTATION = "annotation"


#: The kinds as the plain strings of an :class:`ObjectTable`'s ``kind`` column (for numpy comparisons).
DETECTION: str = Kind.DETECTION.value
ANNOTATION: str = Kind.ANNOTATION.value


class Verdict(str, Enum):
    """What one row of the decision log says.

    ``ACCEPT``, ``REJECT`` and ``RELABEL`` are a reviewer's verdicts on a detection; ``ADD`` and
    ``DELETE`` create and remove annotations; ``UNDO`` and ``REDO`` point at an earlier row; ``SUBTYPE``
    sets only a figure's subtype (label "atypical" or "normal"), never its status.
    """

    ACCEPT = "accept"
    REJECT = "reject"
    RELABEL = "relabel"
    ADD = "add"
    DELETE = "delete"
    UNDO = "undo"
    REDO = "redo"
    SUBTYPE = "subtype"


YELLOW = "yellow"
WHITE = "white"
RED = "red"

_COLOURS: dict[Status, str] = {
    Status.PENDING: YELLOW,
    Status.ACCEPTED: WHITE,
    Status.REJECTED: RED,
    Status.RELABELLED: RED,
    Status.GROUND_TRUTH: WHITE,
    Status.DELETED: RED,
    Status.MATCHED: YELLOW,
    Status.UNMATCHED: RED,
    Status.MISSED: WHITE,
}


def colour_for(status: Status | str) -> str:
    """Return "yellow", "white" or "red" for a status (or its string value)."""
    return _COLOURS[Status(status)]

#: The ``source`` of an annotation added by hand in the dock, and of ground truth given with an image.
HAND = "hand"
GROUND_TRUTH_SOURCE = "ground truth"
