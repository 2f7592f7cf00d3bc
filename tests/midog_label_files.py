"""A MIDOG-style label file for import tests (not a test module: shared by tests/review and tests/_qt)."""

from __future__ import annotations

import json
from pathlib import Path


def midog_json(path: Path, images: dict[str, int], size: tuple[int, int] = (4000, 4000),
               step: tuple[int, int] = (200, 200)) -> Path:
    """Write a MIDOG-style JSON: each image of ``size`` gets ``n`` 50 px mitotic-figure boxes ``step`` apart."""
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "mitotic figure"}]}
    for image_id, (name, n) in enumerate(images.items(), start=1):
        doc["images"].append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
        for k in range(n):
            x, y = 100 + step[0] * k, 100 + step[1] * k
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id,
                                       "bbox": [x, y, x + 50, y + 50], "category_id": 1})
    path.write_text(json.dumps(doc))
    return path
