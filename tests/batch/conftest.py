"""Cohort fixtures: small synthetic slides (one with glass, one broken) and a real two-worker dask cluster."""

from __future__ import annotations

import numpy as np
import pytest

from midog_viewer.synthetic import SyntheticHPF, make_hpf, write_hpf_tiff


def write_field(path, seed, width=700, height=600):
    """A synthetic H&E field (700 x 600 px: 2 x 2 tiles of 512) as a TIFF."""
    write_hpf_tiff(make_hpf(seed=seed, width=width, height=height), path)
    return path


def write_glass_slide(path, width=1400, height=1100, field=(600, 500), at=(100, 100), seed=3):
    """A synthetic field pasted on white glass with the scanner's faint noise (3 x 3 tiles planned)."""
    rng = np.random.default_rng(seed)
    canvas = (250 - rng.integers(0, 4, (height, width, 3))).astype(np.uint8)
    hpf = make_hpf(seed=seed, width=field[0], height=field[1])
    canvas[at[1] : at[1] + field[1], at[0] : at[0] + field[0]] = hpf.image
    write_hpf_tiff(SyntheticHPF(canvas, hpf.boxes, hpf.labels), path)
    return path


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
def thread_cluster():
    """Two in-process dask workers (one thread each) with the demo detector, reachable over TCP."""
    distributed = pytest.importorskip("distributed")
    from midog_viewer.batch.cluster import quiet_dask_logs
    from midog_viewer.batch.worker import DetectorPlugin

    quiet_dask_logs()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://",
                                       dashboard_address=None, silence_logs=50)
    client = distributed.Client(cluster)
    client.register_plugin(DetectorPlugin(None, "cpu", None, torch_threads=1))
    yield client, cluster
    client.close()
    cluster.close()
