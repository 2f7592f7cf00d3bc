"""Import an annotation file into the review store, all or nothing (read by :mod:`midog_viewer.formats`).

The whole file is parsed first (any fault raises :class:`~midog_viewer.errors.AnnotationFormatError`
naming the line or field), then slides and annotations go in as one transaction. Images are matched to
slides by file name: with ``images_dir`` the file there is registered with its own size and pixel
size; without it an existing slide of that name is used, or a slide is registered by name alone with
the pixel size the annotation file implies (MIDOG 2021 images) or none. Imported annotations are ground
truth with the annotation file's name as their source; importing the same file name twice is refused, and
labels already in the store (an annotation of the same slide and class whose centre lies within the MIDOG
hit radius, 7.5 µm; 0.5 px where the slide has no pixel size) are skipped and counted: the same labels
imported from another format (MIDOG.json, then MIDOG.sqlite) add nothing.

Hostile or damaged files: image names are file names inside ``images_dir`` (absolute names and ``..``
are refused; without ``images_dir`` no file is looked for at all), coordinates beyond any slide (e.g.
1e300) are refused, and boxes wholly outside their image's known size are imported but counted, and
the summary line warns about them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from midog_viewer.errors import AnnotationFormatError, ReviewStoreError
from midog_viewer.evaluate import RADIUS_MM, near_any
from midog_viewer.formats.importing import detect_format, read_file
from midog_viewer.formats.records import ImageAnnotations, check_coordinates, check_image_name, outside_image
from midog_viewer.review.status import ANNOTATION
from midog_viewer.review.store import ReviewStore, Slide


@dataclass
class ImportSummary:
    """What an import added: slides it touched, images with at least one label, labels per class."""

    source: str
    format: str
    slides: int
    images: int
    classes: dict[str, int] = field(default_factory=dict)
    #: Boxes wholly outside their image's known size, and the first of them ("name [x1, y1, x2, y2]").
    outside: int = 0
    first_outside: str = ""
    #: Labels left out because the store already holds them (same slide, class, centre within 7.5 µm).
    skipped: int = 0
    #: With ``slide=``: that slide's name, and the labels (and their images) of other images left out.
    for_slide: str = ""
    other_objects: int = 0
    other_images: int = 0

    def as_json(self) -> dict:
        return {"images": self.images, "classes": self.classes, "slides": self.slides,
                "format": self.format, "source": self.source, "outside_image": self.outside,
                "skipped_already_stored": self.skipped}


def _geojson_image_name(path: Path, store: ReviewStore, images_dir: Path | None) -> str:
    """The image a GeoJSON file belongs to: a slide or image file with the same stem, else the stem."""
    stem = path.stem
    slides = store.slides()
    for slide in slides:  # "a.tiff.geojson" (a GeoJSON folder export of colliding stems) is a.tiff's
        if slide.name == stem:
            return slide.name
    for slide in slides:
        if Path(slide.name).stem == stem:
            return slide.name
    if images_dir is not None:
        for candidate in sorted(images_dir.glob(f"{stem}.*")):
            if candidate.suffix.lower() not in (".geojson", ".json"):
                return candidate.name
    return stem


def import_file(
    store: ReviewStore,
    path: str | Path,
    *,
    fmt: str | None = None,
    images_dir: str | Path | None = None,
    image_name: str | None = None,
    point_box_px: float = 50.0,
    point_box_um: float | None = None,
    slide: Slide | None = None,
) -> ImportSummary:
    """Import one annotation file as ground truth; the store is unchanged if anything is wrong.

    With ``slide`` only the labels of the image named like it (file name, else stem) are imported, onto
    it; the summary counts what was left out (``other_objects`` of ``other_images``).
    """
    path = Path(path)
    images_dir = Path(images_dir) if images_dir is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise AnnotationFormatError(f"the image folder {images_dir} does not exist.")
    fmt = fmt or detect_format(path)
    if fmt == "geojson" and image_name is None:
        image_name = _geojson_image_name(path, store, images_dir)
    images = read_file(path, fmt, point_box_px=point_box_px, point_box_um=point_box_um, image_name=image_name)
    for image in images:
        check_image_name(image.name, path.name)
        check_coordinates(image, path.name)
    source = path.name
    others: list[ImageAnnotations] = []
    only = slide  # (the loop below reuses the name ``slide``)
    if slide is not None:
        images, others = _split_for(images, slide)
        imported_here = store.objects(slide.id)
        if np.any(imported_here.source == source):
            raise ReviewStoreError(f"{source} was imported onto {slide.name} already; importing it again would double its labels.")
    elif source in store.annotation_sources():
        raise ReviewStoreError(f"{source} was imported into {store.path.name} already; importing it again would double its labels.")
    classes: Counter[str] = Counter()
    summary = ImportSummary(source, fmt, len(images), sum(1 for image in images if len(image)))
    if slide is not None:
        summary.for_slide = slide.name
        summary.other_objects = sum(len(image) for image in others)
        summary.other_images = sum(1 for image in others if len(image))
    with store.transaction():
        for image in images:
            slide_id = only.id if only is not None else _slide_for(store, image, images_dir)
            if len(image):
                slide = store.slide(slide_id)
                new = _not_stored(store, slide, image)
                summary.skipped += int((~new).sum())
                boxes, labels = image.boxes[new], [label for label, keep in zip(image.labels, new) if keep]
                subtypes = [a for a, keep in zip(image.subtypes(), new) if keep]
                outside = np.flatnonzero(outside_image(boxes, slide.width, slide.height))
                if outside.size and not summary.outside:
                    box = ", ".join(f"{v:g}" for v in boxes[outside[0]])
                    summary.first_outside = f"{image.name} [{box}] in {slide.width} x {slide.height} px"
                summary.outside += int(outside.size)
                if labels:
                    store.add_annotations(slide_id, boxes, labels, source, atypical=subtypes)
                classes.update(labels)
    summary.classes = dict(classes)
    return summary


def _split_for(images: list[ImageAnnotations], slide: Slide) -> tuple[list[ImageAnnotations], list[ImageAnnotations]]:
    """The images named like ``slide`` (its file name, else its stem when that alone matches) and the rest."""
    mine = [image for image in images if image.name == slide.name]
    if not mine:
        mine = [image for image in images if Path(image.name).stem == Path(slide.name).stem]
    return mine, [image for image in images if not any(image is m for m in mine)]


def _not_stored(store: ReviewStore, slide: Slide, image: ImageAnnotations) -> np.ndarray:
    """Bool per label: no annotation of the slide with its class has its centre within the MIDOG radius."""
    stored = store.objects(slide.id)
    stored = stored.select(stored.kind == ANNOTATION)
    new = np.ones(len(image), dtype=bool)
    if not len(stored):
        return new
    # centres in mm; without a pixel size, 0.5 px stands for the radius (only the very same label is dropped)
    to_mm = slide.mpp / 1000.0 if slide.mpp else RADIUS_MM / 0.5
    boxes = image.boxes
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    labels = np.asarray(image.labels, dtype=object)
    for label in set(image.labels):
        mine = labels == label
        theirs = stored.label == label
        if theirs.any():
            new[mine] = ~near_any(centres[mine] * to_mm, stored.centres[theirs] * to_mm)
    return new


def _slide_for(store: ReviewStore, image: ImageAnnotations, images_dir: Path | None) -> int:
    if images_dir is not None:
        candidate = images_dir / image.name
        if candidate.is_file():
            mpp, width, height = image.mpp, image.width, image.height
            from midog_viewer.io import open_slide  # only when there are image files to read

            with open_slide(candidate) as slide:
                mpp = slide.mpp or mpp
                width, height = slide.width, slide.height
            return store.add_slide(candidate, mpp, width, height)
    existing = store.find_slide(image.name)
    if existing is not None:
        if existing.mpp is None and image.mpp is not None:
            store.set_slide_mpp(existing.id, image.mpp)
        return existing.id
    return store.add_slide(image.name, image.mpp, image.width, image.height, name_only=True)


def summary_line(summary: ImportSummary) -> str:
    """One human line: source, images, labels added per class, labels skipped as already stored, warnings."""
    none = "no new labels" if summary.skipped else "no labels"
    per_class = ", ".join(f"{n:,} {name}" for name, n in sorted(summary.classes.items())) or none
    skipped = (f"; skipped {summary.skipped:,} already in the store (same slide, class and place)"
               if summary.skipped else "")
    warning = (f"; warning: {summary.outside:,} boxes lie wholly outside their image (first: {summary.first_outside})"
               if summary.outside else "")
    if summary.for_slide:
        added = sum(summary.classes.values())
        classes = f" ({per_class})" if summary.classes else ""
        others = (f"; {summary.other_objects:,} objects of {summary.other_images:,} other slides not imported"
                  if summary.other_objects else "")
        return f"{summary.source}: {added:,} objects for {summary.for_slide}{classes}{others}{skipped}{warning}"
    return (f"{summary.source} ({summary.format}): {summary.images} labelled images of {summary.slides}; "
            f"{per_class}{skipped}{warning}")

