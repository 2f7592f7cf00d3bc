"""The one exception family the core raises for bad input.

Every module raises a subclass of :class:`MidogError` with one sentence a user can act on; the CLI
turns it into one line on stderr and exit status 2, the GUI into a notification.
"""


class MidogError(Exception):
    """Bad input or an impossible request, explained in one sentence."""


class SlideError(MidogError):
    """A file that cannot be opened as a slide."""


class ModelError(MidogError):
    """A checkpoint or model configuration that cannot be loaded."""


class AnnotationFormatError(MidogError):
    """An annotation file that cannot be imported or exported."""


class ReviewStoreError(MidogError):
    """A review database that cannot be used."""


class TrainingError(MidogError):
    """Training data or settings that cannot be used."""
