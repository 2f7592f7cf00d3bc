"""Fuzzed imports: truncated, mistyped and hostile files end in one clear error and an unchanged store."""

from __future__ import annotations

import itertools
import json
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midog_viewer.errors import MidogError
from midog_viewer.formats import sliderunner
from midog_viewer.review.importing import import_file
from midog_viewer.formats.records import ImageAnnotations
from midog_viewer.review import ReviewStore

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

MIDOG_DOC = {
    "info": {"description": "MIDOG fuzz"},
    "images": [{"id": 1, "file_name": "001.tiff", "width": 500, "height": 400}, {"id": 2, "file_name": "002.tiff"}],
    "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 60, 60]},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0.5, 1.5, 50.5, 51.5]},
    ],
}
GEOJSON_DOC = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "geometry": {"type": "Point", "coordinates": [100, 100]},
     "properties": {"classification": {"name": "Mitosis"}}},
    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
     "properties": {"classification": {"name": "Nonmitosis"}}},
]}
CSV_TEXT = "image,label,x1,y1,x2,y2\n001.tiff,mitosis,1,2,51,52\n002.tiff,Hard negative,5,5,55,55\n"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=10,
)
_names = itertools.count()


@pytest.fixture(scope="module")
def store_dir():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def store(store_dir):
    with ReviewStore(store_dir / "fuzz.db", reviewer="fuzz") as s:
        s.add_slide("001.tiff", 0.23, 500, 400)  # something to leave untouched
        yield s


def snapshot(store):
    slides = store.slides()
    return slides, store.annotation_sources(), [len(store.objects(s.id, include_deleted=True)) for s in slides]


def import_must_fail_cleanly_or_work(store, folder, suffix, payload: bytes):
    path = folder / f"case{next(_names)}{suffix}"
    path.write_bytes(payload)
    before = snapshot(store)
    try:
        import_file(store, path)
    except MidogError as error:
        message = str(error)
        assert message and "\n" not in message and "Traceback" not in message
        assert snapshot(store) == before
    assert store.integrity_check() == "ok"


def paths_of(value, prefix=()):
    """Every path to a value inside nested dicts and lists."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_of(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths_of(item, prefix + (index,))


def replaced(doc, path, value):
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(("suffix", "doc"), [(".json", MIDOG_DOC), (".geojson", GEOJSON_DOC)])
@FUZZ
@given(data=st.data())
def test_mistyped_json_fields(store, store_dir, suffix, doc, data):
    path = data.draw(st.sampled_from(list(paths_of(doc))))
    value = data.draw(json_values)
    import_must_fail_cleanly_or_work(store, store_dir, suffix, json.dumps(replaced(doc, path, value)).encode())


@pytest.mark.parametrize(
    ("suffix", "payload"),
    [(".json", json.dumps(MIDOG_DOC).encode()), (".geojson", json.dumps(GEOJSON_DOC).encode()), (".csv", CSV_TEXT.encode())],
)
@FUZZ
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_text_files(store, store_dir, suffix, payload, fraction):
    import_must_fail_cleanly_or_work(store, store_dir, suffix, payload[: int(len(payload) * fraction)])


@FUZZ
@given(lines=st.lists(st.lists(st.text(max_size=6), min_size=0, max_size=7), max_size=5))
def test_mistyped_csv_cells(store, store_dir, lines):
    body = "\n".join(",".join(cells) for cells in lines)
    import_must_fail_cleanly_or_work(store, store_dir, ".csv", ("image,label,x,y\n" + body).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    ("suffix", "payload"),
    [
        (".json", b"[" * 100_000),
        (".json", b'{"images": [{"id": 1, "file_name": "a", "width": 1e400}], "categories": [], "annotations": []}'),
        (".json", b'{"images": [], "categories": [], "annotations": [{"bbox": [NaN, 0, 1, 1]}]}'),
        (".json", bytes(range(256)) * 4),
        (".geojson", b'{"type": "FeatureCollection", "features": [{"geometry": {"type": "Point", "coordinates": '
                     + b"[" * 5000 + b"]" * 5000 + b"}}]}"),
        (".csv", b"image,label,x,y\n" + b"a," * 200_000 + b"\n"),
        (".csv", b"image,label,x,y\n\"unterminated,mitosis,1,2\n" + b"x" * 200_000),
        (".csv", b"\xff\xfe\x00garbage"),
        (".sqlite", b"SQLite format 3\x00" + b"\x00" * 200),
        (".sqlite", b""),
    ],
)
def test_hostile_files(store, store_dir, suffix, payload):
    import_must_fail_cleanly_or_work(store, store_dir, suffix, payload)


@pytest.fixture(scope="module")
def sliderunner_bytes(store_dir):
    path = store_dir / "template.sqlite"
    sliderunner.write(path, [ImageAnnotations("001.tiff", 500, 400, None, np.array([[0, 0, 50, 50], [60, 60, 110, 110]]),
                                              ["mitotic figure", "hard negative"])])
    return path.read_bytes()


@FUZZ
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_sliderunner(store, store_dir, sliderunner_bytes, fraction):
    import_must_fail_cleanly_or_work(store, store_dir, ".sqlite", sliderunner_bytes[: int(len(sliderunner_bytes) * fraction)])


SLIDERUNNER_CELLS = [
    ("Annotations", "slide"), ("Annotations", "type"), ("Annotations", "agreedClass"), ("Annotations", "deleted"),
    ("Annotations_coordinates", "coordinateX"), ("Annotations_coordinates", "coordinateY"),
    ("Annotations_coordinates", "annoId"), ("Slides", "filename"), ("Slides", "width"), ("Classes", "name"),
    ("Annotations_label", "class"),
]


@FUZZ
@given(cell=st.sampled_from(SLIDERUNNER_CELLS),
       value=st.none() | st.integers(-10**18, 10**18) | st.floats(allow_nan=True) | st.text(max_size=5) | st.binary(max_size=5))
def test_mistyped_sliderunner_cells(store, store_dir, sliderunner_bytes, cell, value):
    path = store_dir / f"mutated{next(_names)}.sqlite"
    path.write_bytes(sliderunner_bytes)
    db = sqlite3.connect(path)
    db.create_function("pycurrent_time", 0, lambda: 0.0)
    table, column = cell
    db.execute(f"UPDATE {table} SET {column} = ? WHERE uid = 1", (value,))
    db.commit()
    db.close()
    import_must_fail_cleanly_or_work(store, store_dir, ".sqlite", path.read_bytes())
