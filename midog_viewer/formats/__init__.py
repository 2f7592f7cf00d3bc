"""Annotation formats of the field (MIDOG COCO-style JSON, SlideRunner, QuPath GeoJSON, CSV, grand-challenge
points), one codec module each: pure readers and writers of boxes per image, a leaf of the package (nothing here
imports the review store, the detector, training or the GUI; :mod:`midog_viewer.review.importing` and
:mod:`midog_viewer.review.exporting` combine the codecs with the store)."""

#: Readable formats: "midog" is MIDOG's COCO-like JSON (bbox xyxy), "coco" standard COCO (bbox xywh).
IMPORT_FORMATS = ("midog", "coco", "sliderunner", "geojson", "csv")
#: Formats a review store exports to ("midog-json": grand-challenge "Multiple points" per case, in mm).
EXPORT_FORMATS = ("csv", "coco", "sliderunner", "geojson", "midog-json")
