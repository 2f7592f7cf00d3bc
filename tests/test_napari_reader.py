"""The napari reader and sample contributions, and the viewer the CLI opens (GUI parts under Xvfb)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import tifffile

from midog_viewer._napari import get_reader, slide_layer_data, synthetic_sample
from midog_viewer.classes import HARD_NEGATIVE, MITOTIC_FIGURE
from midog_viewer.io import open_slide

@pytest.fixture(scope="module")
def ome_pyramid(tmp_path_factory):
    """A 3-level OME-TIFF pyramid at 0.5 µm/px."""
    path = tmp_path_factory.mktemp("napari") / "slide.ome.tif"
    image = np.random.default_rng(0).integers(0, 256, (512, 768, 3), dtype=np.uint8)
    with tifffile.TiffWriter(path, ome=True) as tw:
        options = dict(photometric="rgb", tile=(128, 128), compression="zlib")
        tw.write(image, subifds=2, metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}, **options)
        tw.write(image[::2, ::2], subfiletype=1, **options)
        tw.write(image[::4, ::4], subfiletype=1, **options)
    return path


@pytest.fixture
def sample_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDOG_VIEWER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_reader_returns_none_for_what_it_cannot_read(tmp_path, ome_pyramid):
    (tmp_path / "notes.txt").write_text("hello")
    for path in ["/no/such/slide.svs", str(tmp_path), str(tmp_path / "notes.txt"),
                 [str(ome_pyramid), str(ome_pyramid)]]:
        assert get_reader(path) is None, path


def test_an_image_file_it_cannot_read_gets_one_line_why_and_no_layer(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("midog_viewer._qt.notify.show_error", shown.append)
    (tmp_path / "empty.tif").write_bytes(b"")
    tifffile.imwrite(tmp_path / "u16.tif", np.zeros((32, 32), np.uint16))
    for name in ("empty.tif", "u16.tif"):
        reader = get_reader(str(tmp_path / name))
        assert reader(str(tmp_path / name)) == [(None,)]  # napari's "no layer" sentinel
    assert len(shown) == 2 and all(name in text and "\n" not in text for name, text in zip(("empty", "u16"), shown))
    assert "8-bit" in shown[1]


def test_reader_gives_one_lazy_multiscale_layer_in_micrometres(ome_pyramid):
    reader = get_reader(str(ome_pyramid))
    assert callable(reader)
    [(data, kwargs, layer_type)] = reader(str(ome_pyramid))
    assert layer_type == "image"
    assert [level.shape for level in data] == [(512, 768, 3), (256, 384, 3), (128, 192, 3)]
    assert kwargs["multiscale"] is True and kwargs["rgb"] is True
    assert kwargs["scale"] == (0.5, 0.5) and kwargs["units"] == ("µm", "µm")
    assert kwargs["metadata"]["slide"].path == ome_pyramid
    assert not isinstance(data[0], np.ndarray)  # the slide's lazy arrays, not pixels read up front
    assert get_reader([str(ome_pyramid)]) is not None


def test_reader_on_the_real_svs_and_its_dicom_folder(shared_data):
    for path in ("CMU-1-Small-Region.svs", "CMU-1-Small-Region-dicom"):
        reader = get_reader(str(shared_data / "slides" / path))
        [(data, kwargs, _)] = reader(path)
        assert data[0].shape == (2967, 2220, 3) and kwargs["scale"] == (0.499, 0.499)
        kwargs["metadata"]["slide"].close()


def test_layer_without_pixel_size_has_no_scale(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb", metadata=None)
    with open_slide(tmp_path / "plain.tif") as slide:
        _, kwargs, _ = slide_layer_data(slide)
    assert "scale" not in kwargs and "units" not in kwargs and kwargs["metadata"]["mpp"] is None


def test_synthetic_sample_carries_its_ground_truth(sample_cache):
    [(data, kwargs, layer_type)] = synthetic_sample()
    truth = kwargs["metadata"]["ground_truth"]
    assert layer_type == "image" and data[0].shape == (1536, 2048, 3)
    assert kwargs["scale"] == (0.25, 0.25)
    assert truth["boxes"].shape == (len(truth["labels"]), 4) and truth["boxes"].dtype == np.float32
    assert set(truth["labels"]) == {MITOTIC_FIGURE, HARD_NEGATIVE}
    kwargs["metadata"]["slide"].close()


@pytest.mark.gui
def test_viewer_opens_through_our_reader(make_napari_viewer, ome_pyramid):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(ome_pyramid), plugin="midog-viewer")
    assert layer.multiscale and layer.rgb
    assert tuple(layer.scale) == (0.5, 0.5)
    assert [str(unit) for unit in layer.units] == ["micrometer", "micrometer"]
    assert layer.metadata["slide"].format == "ome-tiff"
    assert layer.data[0] is layer.metadata["slide"].levels[0]


@pytest.mark.gui
def test_viewer_opens_the_sample(make_napari_viewer, sample_cache):
    viewer = make_napari_viewer()
    viewer.open_sample("midog-viewer", "synthetic-hpf")
    [layer] = viewer.layers
    assert layer.multiscale and "ground_truth" in layer.metadata


@pytest.mark.gui
def test_open_viewer_with_paths_and_with_none(qtbot, ome_pyramid, sample_cache):
    from midog_viewer._qt.viewer import REVIEW_WIDGET, open_viewer

    review_dock_installed = importlib.util.find_spec("midog_viewer._qt.review_widget") is not None
    for paths, name in [([str(ome_pyramid)], "slide.ome"), (None, "synthetic_hpf_v1_seed0")]:
        viewer = open_viewer(paths, show=False)
        try:
            slides = [layer for layer in viewer.layers if "slide" in layer.metadata]
            assert [layer.name for layer in slides] == [name]
            assert slides[0].multiscale
            assert viewer.canvas.overlays.scale_bar.visible
            assert (f"{REVIEW_WIDGET} (midog-viewer)" in viewer.window.dock_widgets) == review_dock_installed
        finally:
            viewer.close()
