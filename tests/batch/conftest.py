"""Cohort fixtures: small synthetic slides (one with glass, one broken) and a real two-worker dask cluster."""

from __future__ import annotations

import pytest
from batch_slides import write_field, write_glass_slide


@pytest.fixture
def cohort(tmp_path):
    """A folder of two fields, a slide with glass, a broken 'SVS' and a file that is no slide."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    write_field(folder / "a.tiff", 1)
    write_field(folder / "b.tiff", 2)
    write_glass_slide(folder / "glass.tiff")
    (folder / "broken.svs").write_bytes(b"II*\x00" + b"\x00garbage" * 20)
    (folder / "notes.txt").write_text("not a slide")
    return folder


@pytest.fixture(scope="session")
def cluster():
    """A real LocalCluster: two worker processes (one thread each) with the demo detector loaded once each."""
    pytest.importorskip("distributed")
    from midog_viewer.batch.cluster import start, stop

    client, local = start(None, 2, "cpu", None, None)
    yield client, local
    stop(client, local)
