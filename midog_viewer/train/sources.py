"""Training data sources: labelled images from review stores, MIDOG COCO files or the synthetic generator.

Every source yields :class:`LabelledImage` records (boxes in level-0 pixels, labels 0 = mitotic figure,
1 = hard negative), read lazily through :func:`midog_viewer.io.open_slide` (see :mod:`.patches`). Splitting
them is :mod:`.splits`' job, cutting patches :mod:`.patches`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from midog_viewer.classes import CLASS_NAMES, HARD_NEGATIVE, canonical_class
from midog_viewer.errors import AnnotationFormatError, MidogError, TrainingError
from midog_viewer.review.status import REVIEWED_STATUSES, Status

#: Pixel spacing assumed when neither the slide nor the annotation file gives one (MIDOG's scanners: 0.23–0.25).
DEFAULT_MPP = 0.25

@dataclass
class LabelledImage:
    """One image with its labelled objects; pixels are read on demand through ``read_region``."""

    key: str
    boxes: np.ndarray  # (N, 4) float32, xyxy level-0 pixels
    labels: np.ndarray  # (N,) int64, index into CLASS_NAMES
    width: int
    height: int
    mpp: float
    path: Path | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)
    #: Slide the image was cut from ("" when unknown): the split keeps a slide's images on one side.
    slide: str = ""
    #: Data set the image comes from ("" when unknown), for validation figures per source.
    source: str = ""
    #: Pixels of tissue in the image when not all of it is (a mosaic's part-empty row); 0: width × height.
    area_px: int = 0
    #: µm/px the annotation file gives (its ``mpp`` field, or the MIDOG 2021 table by file name); 0: none. Used
    #: only where ``mpp`` is 0 and the image file's resolution tags give none, the order the import applies.
    file_mpp: float = 0.0

    @property
    def tissue_px(self) -> int:
        return int(self.area_px or self.width * self.height)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise TrainingError(f"{self.key}: {len(self.boxes)} boxes but {len(self.labels)} labels.")

    @property
    def n_mitoses(self) -> int:
        return int((self.labels == 0).sum())


def _class_index(name: str) -> int | None:
    canonical = canonical_class(name)
    return CLASS_NAMES.index(canonical) if canonical in CLASS_NAMES else None


def images_from_coco(json_path: str | Path, images_dir: str | Path, bbox_format: str = "xyxy") -> list[LabelledImage]:
    """Labelled images of a MIDOG COCO-style file (``bbox`` is [x1, y1, x2, y2] there; ``xywh`` for plain COCO).

    The file is read by the one MIDOG COCO codec, :func:`midog_viewer.formats.midog_coco.read`, as the import
    does: categories map through :func:`canonical_class` ("not mitotic figure" → hard negative), and the pixel
    size an image's own ``mpp`` field or the MIDOG 2021 table (001–100: 0.23 µm/px) gives is used where the
    image file has no resolution tags. Other categories and images without a label are left out. Every
    labelled image must exist in ``images_dir``.
    """
    from midog_viewer.formats import midog_coco
    from midog_viewer.formats.records import check_image_name

    json_path, images_dir = Path(json_path), Path(images_dir)
    if not json_path.is_file():
        raise TrainingError(f"annotation file not found: {json_path}.")
    try:
        parsed = midog_coco.read(json_path, bbox_format)
        for image in parsed:
            check_image_name(image.name, json_path.name)
    except AnnotationFormatError as exc:
        raise TrainingError(f"cannot train on {json_path.name}: {exc}") from exc
    if not images_dir.is_dir():
        raise TrainingError(f"image folder not found: {images_dir}.")
    records = []
    for image in parsed:
        labels = [_class_index(name) for name in image.labels]
        keep = np.array([label is not None for label in labels], dtype=bool)
        if not keep.any():
            continue
        boxes = image.boxes[keep]
        empty = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        if empty.size:
            raise TrainingError(
                f"{json_path}: image {image.name} has an empty box {boxes[empty[0]].tolist()} (wrong --bbox-format?)."
            )
        records.append(
            LabelledImage(
                key=image.name,
                boxes=boxes,
                labels=np.array([label for label in labels if label is not None]),
                width=int(image.width or 0),
                height=int(image.height or 0),
                mpp=0.0,  # the image file's resolution tags first, as the import reads them (check_readable)
                path=images_dir / image.name,
                file_mpp=float(image.mpp or 0.0),
            )
        )
    return records


def images_from_review_store(db_path: str | Path) -> list[LabelledImage]:
    """Labelled images of a review database: what the reviewer kept trains as its label, what they rejected
    as "hard negative".

    Accepted detections, hand-added annotations and ground truth keep their (canonical) label, relabelled
    ones take the new label; rejected predictions become hard negatives; pending and deleted objects are
    left out (nobody has judged them, or the judgement was to remove them).
    """
    from midog_viewer.review import ReviewStore

    db_path = Path(db_path)
    if not db_path.is_file():
        raise TrainingError(f"review database not found: {db_path}.")
    try:
        with ReviewStore(db_path) as store:
            records = []
            for slide in store.slides():
                table = store.objects(slide.id)
                labels = [training_label(status, label) for status, label in zip(table.status, table.label)]
                keep = np.array([lab is not None for lab in labels], dtype=bool)
                if not keep.any():
                    continue
                records.append(
                    LabelledImage(
                        key=f"{db_path.name}:{slide.id}:{slide.name}",
                        boxes=table.boxes[keep],
                        labels=np.array([lab for lab in labels if lab is not None]),
                        width=int(slide.width or 0),
                        height=int(slide.height or 0),
                        mpp=float(slide.mpp or 0.0),
                        path=slide_file(db_path, slide.path),
                    )
                )
            return records
    except MidogError as exc:
        raise TrainingError(f"cannot use review database {db_path}: {exc}") from exc


def slide_file(db_path: Path, slide_path: str) -> Path:
    """Where a store's slide file is: its stored path, or (a bare name an import registered) beside the store."""
    path = Path(slide_path)
    return path if path.is_absolute() else db_path.parent / path


def training_label(status: str, label: str) -> int | None:
    """Class index a reviewed object trains as, or None when it does not train (pending, deleted, other class)."""
    if status == Status.REJECTED.value:
        return CLASS_NAMES.index(HARD_NEGATIVE)
    if status in REVIEWED_STATUSES:
        return _class_index(label)
    return None


def synthetic_images(count: int, seed: int = 0, size: int = 512) -> list[LabelledImage]:
    """``count`` synthetic HPFs from :func:`midog_viewer.synthetic.make_hpf` (seeds ``seed``…), held in memory."""
    from midog_viewer.synthetic import make_hpf

    if count < 1:
        raise TrainingError(f"the synthetic source needs at least one image, got {count}.")
    records = []
    for s in range(seed, seed + count):
        hpf = make_hpf(s, size, size)
        labels = [_class_index(name) for name in hpf.labels]
        keep = [i for i, lab in enumerate(labels) if lab is not None]
        records.append(
            LabelledImage(
                key=f"synthetic-{s}",
                boxes=np.asarray(hpf.boxes, dtype=np.float32).reshape(-1, 4)[keep],
                labels=np.array([labels[i] for i in keep], dtype=np.int64),
                width=size,
                height=size,
                mpp=float(hpf.mpp),
                pixels=np.ascontiguousarray(hpf.image[..., :3]),
            )
        )
    return records


def check_readable(images: Sequence[LabelledImage]) -> None:
    """Open every file-backed image once (header only) and fill in its size and pixel spacing.

    Raises :class:`TrainingError` naming the first image that is missing or cannot be opened, so a run
    fails before any work starts rather than hours into it.
    """
    from midog_viewer.io import open_slide

    missing = [im for im in images if im.path is not None and not im.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TrainingError(f"image not found: {missing[0].path}{more}.")
    for im in images:
        if im.path is None or im.pixels is not None:  # in memory: read already
            continue
        try:
            slide = open_slide(im.path)
        except MidogError as exc:
            raise TrainingError(f"cannot read training image {im.path}: {exc}") from exc
        im.width, im.height = int(slide.width), int(slide.height)
        if not im.mpp:
            im.mpp = float(getattr(slide, "mpp", None) or im.file_mpp or DEFAULT_MPP)
        close = getattr(slide, "close", None)
        if close is not None:
            close()
