"""Slides as lazy pyramids: ``open_slide(path) -> Slide`` for SVS, NDPI, OME-TIFF, TIFF, PNG, JPEG, DICOM."""

from midog_viewer.io.slide import FORMATS, Slide, open_slide

__all__ = ["FORMATS", "Slide", "open_slide"]
