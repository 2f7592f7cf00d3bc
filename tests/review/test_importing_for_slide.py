"""Importing for one slide (the dock's default): only its labels, and a summary of what was left out."""

from __future__ import annotations

import pytest

from midog_viewer.errors import ReviewStoreError
from midog_viewer.review.importing import import_file, summary_line
from midog_viewer.review import ReviewStore
from midog_label_files import midog_json


def test_only_the_open_slides_labels_come_in(tmp_path):
    labels = midog_json(tmp_path / "labels.json", {"a.tiff": 3, "b.tiff": 5, "c.tiff": 2, "d.tiff": 0})
    with ReviewStore(tmp_path / "r.sqlite") as store:
        slide = store.slide(store.add_slide(tmp_path / "somewhere" / "a.tiff", 0.25, 4000, 4000))
        summary = import_file(store, labels, slide=slide)
        assert [s.name for s in store.slides()] == ["a.tiff"] and len(store.objects(slide.id)) == 3
        assert (summary.other_objects, summary.other_images) == (7, 2)
        assert summary_line(summary) == (
            "labels.json: 3 objects for a.tiff (3 mitotic figure); 7 objects of 2 other slides not imported"
        )
        with pytest.raises(ReviewStoreError, match="imported onto a.tiff already"):
            import_file(store, labels, slide=slide)
        other = store.slide(store.add_slide(tmp_path / "b.svs", 0.25, 4000, 4000))  # matched by stem
        assert sum(import_file(store, labels, slide=other).classes.values()) == 5
        assert len(store.slides()) == 2


def test_the_real_midog_json_onto_an_unrelated_slide_adds_nothing_and_says_so(shared_data, tmp_path):
    with ReviewStore(tmp_path / "r.sqlite") as store:
        slide = store.slide(store.add_slide(shared_data / "slides" / "CMU-1-Small-Region.svs", 0.499, 2220, 2967))
        summary = import_file(store, shared_data / "annotations" / "MIDOG.json", slide=slide)
        assert len(store.slides()) == 1 and len(store.objects(slide.id)) == 0
        assert summary_line(summary) == (
            "MIDOG.json: 0 objects for CMU-1-Small-Region.svs; 4,435 objects of 150 other slides not imported"
        )
