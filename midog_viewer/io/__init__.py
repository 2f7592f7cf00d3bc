"""Slides as lazy pyramids: ``open_slide(path) -> Slide`` for SVS, NDPI, OME-TIFF, TIFF, PNG, JPEG, DICOM."""

from midog_viewer.io.slide import FORMATS, Slide, open_slide

#: File endings of the plain images (crops, fields) the trainers and ``classify-atypical`` pick up in a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

__all__ = ["FORMATS", "IMAGE_SUFFIXES", "Slide", "open_slide"]
