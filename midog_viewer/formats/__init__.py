"""Annotation formats of the field (MIDOG COCO-style JSON, SlideRunner, QuPath GeoJSON, CSV, grand-challenge
points), one module each, plus atomic import into and export from the review store."""
