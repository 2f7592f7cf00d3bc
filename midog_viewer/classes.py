"""The two classes of the MIDOG detector and the names other tools use for them."""

from __future__ import annotations

MITOTIC_FIGURE = "mitotic figure"
HARD_NEGATIVE = "hard negative"
#: Model output order: label 0 is a mitotic figure, label 1 a hard negative (as in the seed's mmdet config).
CLASS_NAMES: tuple[str, str] = (MITOTIC_FIGURE, HARD_NEGATIVE)
#: Subtypes of a mitotic figure, in the atypical classifier's order (its logit is that of the second).
NORMAL_MITOSIS = "normal"
ATYPICAL_MITOSIS = "atypical"
SUBTYPE_NAMES: tuple[str, str] = (NORMAL_MITOSIS, ATYPICAL_MITOSIS)
#: The names the MIDOG annotation files (MIDOG.json, MIDOG.sqlite) give our two classes; what we write.
MIDOG_FILE_NAMES: dict[str, str] = {MITOTIC_FIGURE: "mitotic figure", HARD_NEGATIVE: "not mitotic figure"}
#: The names of grand-challenge "Multiple points" files (the MIDOG evaluation); only the first is scored.
GC_POINT_NAMES: dict[str, str] = {MITOTIC_FIGURE: "mitotic figure", HARD_NEGATIVE: "non-mitotic figure"}

_ALIASES = {
    "mitotic figure": MITOTIC_FIGURE,
    "mitotic figures": MITOTIC_FIGURE,
    "mitosis": MITOTIC_FIGURE,
    "mitose": MITOTIC_FIGURE,
    "mitotic": MITOTIC_FIGURE,
    "mitotic-figure": MITOTIC_FIGURE,
    "not mitotic figure": HARD_NEGATIVE,
    "non-mitotic figure": HARD_NEGATIVE,
    "hard negative": HARD_NEGATIVE,
    "hard-negative": HARD_NEGATIVE,
    "nonmitosis": HARD_NEGATIVE,
    "non-mitosis": HARD_NEGATIVE,
    "non mitosis": HARD_NEGATIVE,
    "imposter": HARD_NEGATIVE,
    "mitotic figure lookalike": HARD_NEGATIVE,
}


def canonical_class(name: str) -> str:
    """Map a class name from MIDOG, SlideRunner, QuPath or CSV files to ours.

    Names we do not know are kept as they are (stripped), so no label is lost on import.
    """
    key = " ".join(str(name).strip().lower().replace("_", " ").split())
    return _ALIASES.get(key, str(name).strip())
