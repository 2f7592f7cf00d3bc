"""Training data: labelled images from review stores, MIDOG COCO files or the synthetic generator.

Every source yields :class:`LabelledImage` records (boxes in level-0 pixels, labels 0 = mitotic figure,
1 = hard negative), read lazily through :func:`midog_viewer.io.open_slide`. The split is by image, never
by patch, so no cell is seen in training and validation. :class:`PatchDataset` cuts 512 × 512 patches
around the labelled objects (only patches that contain a label, as in the seed).
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from midog_viewer.classes import CLASS_NAMES, HARD_NEGATIVE, canonical_class
from midog_viewer.errors import AnnotationFormatError, MidogError, TrainingError
from midog_viewer.review.status import REVIEWED_STATUSES, Status

#: Pixel spacing assumed when neither the slide nor the annotation file gives one (MIDOG's scanners: 0.23–0.25).
DEFAULT_MPP = 0.25
#: Folder names in a split file that mark training and validation images.
_TRAIN_DIRS = {"train", "training"}
_VAL_DIRS = {"valid", "val", "validation"}

RegionReader = Callable[[int, int, int, int], np.ndarray]


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


class RegionSource:
    """Reads regions of :class:`LabelledImage` records, keeping a few slides open (lazy, cached)."""

    def __init__(self, max_open: int = 8) -> None:
        self._open: OrderedDict[Path, object] = OrderedDict()
        self._max_open = max_open

    def read(self, image: LabelledImage, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The (h, w, 3) uint8 region at level-0 (x, y); outside the image is white."""
        if image.pixels is not None:
            return _crop_padded(image.pixels, x, y, w, h)
        slide = self._slide(image.path)
        return np.asarray(slide.read_region(x, y, w, h))[..., :3]

    def _slide(self, path: Path | None):
        from midog_viewer.io import open_slide

        if path is None:
            raise TrainingError("an image has neither pixels nor a path.")
        if path not in self._open:
            self._open[path] = open_slide(path)
            while len(self._open) > self._max_open:
                self._open.popitem(last=False)
        self._open.move_to_end(path)
        return self._open[path]

    def __getstate__(self) -> dict:  # DataLoader workers open their own slides
        return {"_open": OrderedDict(), "_max_open": self._max_open}


def _crop_padded(pixels: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    height, width = pixels.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels[y0:y1, x0:x1, :3]
    return out


def _class_index(name: str) -> int | None:
    canonical = canonical_class(name)
    return CLASS_NAMES.index(canonical) if canonical in CLASS_NAMES else None


# ---------------------------------------------------------------------------------------------- sources


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
                path = Path(slide.path)
                records.append(
                    LabelledImage(
                        key=f"{db_path.name}:{slide.id}:{slide.name}",
                        boxes=table.boxes[keep],
                        labels=np.array([lab for lab in labels if lab is not None]),
                        width=int(slide.width or 0),
                        height=int(slide.height or 0),
                        mpp=float(slide.mpp or 0.0),
                        path=path if path.is_absolute() else db_path.parent / path,
                    )
                )
            return records
    except MidogError as exc:
        raise TrainingError(f"cannot use review database {db_path}: {exc}") from exc


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


# ---------------------------------------------------------------------------------------------- splits


def read_split_file(path: str | Path) -> dict[str, str]:
    """File name → "train" or "val" from a ``train_val_split.txt``-style file.

    The organisers' file is an indented folder tree (``MIDOG/A/train/001.tiff``); a file belongs to the
    split named by the nearest enclosing ``train`` or ``valid`` folder. Lines ``NAME train`` / ``NAME val``
    work too.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read split file {path}: {exc}.") from exc
    split: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, folder name)
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if text.endswith("/"):
            stack.append((indent, text.rstrip("/").lower()))
            continue
        parts = re.split(r"[\s,;]+", text)
        if len(parts) == 2 and parts[1].lower() in _TRAIN_DIRS | _VAL_DIRS:
            split[Path(parts[0]).name] = "train" if parts[1].lower() in _TRAIN_DIRS else "val"
            continue
        folders = [name for _, name in stack] + [p.lower() for p in Path(text).parts[:-1]]
        for name in reversed(folders):
            if name in _TRAIN_DIRS or name in _VAL_DIRS:
                split[Path(text).name] = "train" if name in _TRAIN_DIRS else "val"
                break
    if not split:
        raise TrainingError(f"{path} names no image under a 'train' or 'valid' folder.")
    return split


def apply_split(
    images: Sequence[LabelledImage], split: dict[str, str]
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Training and validation images by a file-name split; images the split does not name are left out."""
    train = [im for im in images if split.get(Path(im.key).name) == "train"]
    val = [im for im in images if split.get(Path(im.key).name) == "val"]
    _check_split(train, val, "the split file")
    return train, val


def split_by_image(
    images: Sequence[LabelledImage], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """A reproducible random split by image (at least one image on each side)."""
    if not 0.0 < val_fraction < 1.0:
        raise TrainingError(f"the validation fraction must be between 0 and 1, got {val_fraction}.")
    if len(images) < 2:
        raise TrainingError(
            f"{len(images)} labelled image(s): at least 2 are needed to split training from validation by image."
        )
    order = sorted(range(len(images)), key=lambda i: images[i].key)
    random.Random(seed).shuffle(order)
    n_val = min(len(images) - 1, max(1, round(len(images) * val_fraction)))
    val = [images[i] for i in sorted(order[:n_val])]
    train = [images[i] for i in sorted(order[n_val:])]
    _check_split(train, val, "the random split")
    return train, val


def slide_group(image: LabelledImage) -> str:
    """The split group of an image: its slide's name without extension ("" for every image of unknown slide)."""
    return Path(image.slide).stem.lower() if image.slide else ""


def split_by_slide(
    images: Sequence[LabelledImage], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """A reproducible random split by slide, within each source: no slide has images on both sides (see
    :func:`validation_by_slide`)."""
    val_index = validation_by_slide([(image.source, slide_group(image)) for image in images], val_fraction, seed)
    val = [im for i, im in enumerate(images) if i in val_index]
    train = [im for i, im in enumerate(images) if i not in val_index]
    _check_split(train, val, "the split by slide")
    return train, val


def validation_by_slide(
    keys: Sequence[tuple[str, str]], val_fraction: float = 0.2, seed: int = 0, noun: str = "images"
) -> set[int]:
    """Which items go to validation, given each item's (source, slide group); the detector's and the atypical
    classifier's one split rule.

    Items of unknown slide (group "") form one group per source (they may share slides). In each source, slide
    groups are drawn into validation in a seeded random order until it holds ``val_fraction`` of that
    source's items; a group that alone would overshoot that share twice over stays in training (so a source
    whose items all lack a slide is kept wholly in training). So every source with several slides is
    validated on, and none leaks.
    """
    if not 0.0 < val_fraction < 1.0:
        raise TrainingError(f"the validation fraction must be between 0 and 1, got {val_fraction}.")
    by_source: dict[str, dict[str, list[int]]] = {}
    for i, (source, group) in enumerate(keys):
        by_source.setdefault(source, {}).setdefault(group, []).append(i)
    if sum(len(groups) for groups in by_source.values()) < 2:
        raise TrainingError(
            f"all {len(keys)} {noun} belong to one slide group: give a slide column so they can be split by slide."
        )
    rng = random.Random(seed)
    side: dict[str, bool] = {}  # slide group -> in validation; a slide met in two sources stays on one side
    val_index: set[int] = set()
    for source in sorted(by_source):
        groups = by_source[source]
        order = sorted(groups)
        rng.shuffle(order)
        target = val_fraction * sum(len(members) for members in groups.values())
        taken = sum(len(groups[name]) for name in order if name and side.get(name))
        for name in order:
            key = name or f"\0{source}"  # unknown slides: one group per source
            if key not in side:
                side[key] = len(groups) >= 2 and taken < target and len(groups[name]) <= 2 * target
                taken += len(groups[name]) if side[key] else 0
            if side[key]:
                val_index.update(groups[name])
    return val_index


def _check_split(train: Sequence[LabelledImage], val: Sequence[LabelledImage], what: str) -> None:
    if not train or not val:
        raise TrainingError(
            f"{what} leaves {len(train)} training and {len(val)} validation image(s): both need at least one."
        )
    if not any(im.n_mitoses for im in val):
        raise TrainingError(f"{what} leaves no mitotic figure in the validation images, so F1 is undefined.")


def check_labels(images: Iterable[LabelledImage]) -> None:
    """Refuse data with no mitotic figure at all: there would be nothing to learn."""
    images = list(images)
    if not images or not any(im.n_mitoses for im in images):
        raise TrainingError("the training data has no labelled mitotic figure.")


# ---------------------------------------------------------------------------------------------- patches


class PatchDataset(torch.utils.data.Dataset):
    """Patches around every labelled object; each item is (image [3,H,W] float 0..255, target dict).

    With ``augment`` the patch position is random (the object anywhere inside) and the recipe's
    augmentation applies; otherwise the object sits in the centre. ``random_patches_per_image`` adds that
    many patches per image at positions drawn anywhere in it (with whatever labelled boxes fall inside,
    often none): the seed trained on object patches only, which leaves the model little of the ordinary
    tissue it must stay quiet on; an image with no labelled object (background) always gets at least one.
    Call :meth:`set_epoch` so every epoch draws new, reproducible positions
    and augmentations.
    """

    def __init__(
        self,
        images: Sequence[LabelledImage],
        patch_size: int = 512,
        *,
        augment: Callable | None = None,
        stain: Callable[[LabelledImage, np.ndarray], np.ndarray] | None = None,
        patches_per_object: int = 1,
        random_patches_per_image: int = 0,
        min_visible: float = 0.3,
        seed: int = 0,
    ) -> None:
        self.images = list(images)
        self.patch_size = patch_size
        self.augment = augment
        self.stain = stain
        self.min_visible = min_visible
        self.seed = seed
        self.epoch = 0
        self.source = RegionSource()
        self.index = [
            (i, j) for i, im in enumerate(self.images) for j in range(len(im.boxes)) for _ in range(patches_per_object)
        ]
        # Object index -1: a patch at a random position of the image. An image without any labelled object
        # (background) gets at least one such patch, or it would never be seen.
        self.index += [
            (i, -1)
            for i, im in enumerate(self.images)
            for _ in range(max(random_patches_per_image, 0 if len(im.boxes) else 1))
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_index, object_index = self.index[item]
        image = self.images[image_index]
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, item)) & 0x7FFFFFFF)
        if object_index < 0:
            x, y, w, h = self.random_window(image, generator)
        else:
            x, y, w, h = self.window(image, object_index, generator if self.augment else None)
        pixels = self.source.read(image, x, y, w, h)
        if self.stain is not None:
            pixels = self.stain(image, pixels)
        boxes, labels = boxes_in_window(image.boxes, image.labels, x, y, w, h, self.min_visible)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        boxes_t, labels_t = torch.from_numpy(boxes), torch.from_numpy(labels)
        if self.augment is not None:
            tensor, boxes_t, labels_t = self.augment(tensor, boxes_t, labels_t, generator)
        else:
            tensor = tensor.float()
        return tensor, {"boxes": boxes_t.float().reshape(-1, 4), "labels": labels_t.long()}

    def window(self, image: LabelledImage, object_index: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        """The patch (x, y, w, h) for one object: random position containing it, or centred on it."""
        x1, y1, x2, y2 = image.boxes[object_index]
        w, h = self._patch_shape(image)
        if generator is None:
            fx = fy = 0.5
        else:
            fx, fy = (float(v) for v in torch.rand(2, generator=generator))
        x = _place(x1, x2, w, image.width, fx)
        y = _place(y1, y2, h, image.height, fy)
        return x, y, w, h


    def _patch_shape(self, image: LabelledImage) -> tuple[int, int]:
        """Patch width and height: the patch size, or the image's side where it is smaller (and known)."""
        w = min(self.patch_size, image.width) if image.width else self.patch_size
        h = min(self.patch_size, image.height) if image.height else self.patch_size
        return w, h

    def random_window(self, image: LabelledImage, generator: torch.Generator) -> tuple[int, int, int, int]:
        """A patch (x, y, w, h) at a uniformly random position inside the image."""
        w, h = self._patch_shape(image)
        fx, fy = (float(v) for v in torch.rand(2, generator=generator))
        x = int(round(fx * max(image.width - w, 0)))
        y = int(round(fy * max(image.height - h, 0)))
        return x, y, w, h


def _place(lo: float, hi: float, size: int, limit: int, fraction: float) -> int:
    """Patch start so that [lo, hi) lies inside [start, start + size), kept inside [0, limit) when possible."""
    first, last = hi - size, lo  # every start in [first, last] contains the object (if it fits)
    if last < first:
        first = last = (lo + hi - size) / 2
    start = int(round(first + fraction * (last - first)))
    if limit:
        start = min(max(start, 0), max(limit - size, 0))
    return start


def boxes_in_window(
    boxes: np.ndarray, labels: np.ndarray, x: int, y: int, w: int, h: int, min_visible: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (shifted and clipped to the window) that keep at least ``min_visible`` of their area in it."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    shifted = boxes - np.array([x, y, x, y], dtype=np.float32)
    clipped = shifted.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
    area = np.maximum((shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1]), 1e-6)
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) / area
    keep = visible >= min_visible
    return clipped[keep].astype(np.float32), labels[keep].astype(np.int64)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images as a list: they may differ in size after multi-scale augmentation."""
    images, targets = zip(*batch)
    return list(images), list(targets)
