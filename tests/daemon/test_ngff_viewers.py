"""The store's masks as viewers see them: metadata an independent validator accepts, labels that
are not drawn transparent, and micrometre scales when the pixel size is known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import zarr

from daemon.results.store import ResultsStore
from tests.daemon.test_store import make_result


def written(tmp_path: Path, pixel_size_um: float | None) -> Path:
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append([make_result(i, pixel_size_um=pixel_size_um) for i in range(3)])
    return path / "masks" / "64x64"


def test_image_and_labels_pass_the_ome_zarr_models_validator(tmp_path):
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    image_group = written(tmp_path, 0.65)
    image = open_ome_zarr(zarr.open_group(image_group, mode="r"), version="0.5")
    assert isinstance(image, Image)
    label = open_ome_zarr(zarr.open_group(image_group / "labels" / "artifacts", mode="r"),
                          version="0.5")
    assert isinstance(label, ImageLabel)


def test_no_label_is_given_a_transparent_colour(tmp_path):
    """napari-ome-zarr turns a colour list into the layer's colormap: a list naming only 0, as
    [0,0,0,0], drew every artifact transparent."""
    image_group = written(tmp_path, 0.65)
    attrs = zarr.open_group(image_group / "labels" / "artifacts", mode="r").attrs["ome"]
    colors = attrs["image-label"].get("colors", [])
    assert all(c["rgba"][3] > 0 for c in colors if c["label-value"] != 0)
    assert not colors or {c["label-value"] for c in colors} >= {1, 2, 3}


@pytest.mark.parametrize(("pixel_size", "scale", "unit"), [(0.65, [1.0, 0.65, 0.65], "micrometer"),
                                                           (None, [1.0, 1.0, 1.0], None)])
def test_label_scale_is_the_pixel_size_when_known(tmp_path, pixel_size, scale, unit):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    image_group = written(tmp_path, pixel_size)
    nodes = list(Reader(parse_url(str(image_group)))())
    [label] = [n for n in nodes if n.load(Label) is not None]
    transforms = label.metadata["coordinateTransformations"][0]
    assert transforms == [{"type": "scale", "scale": scale}]
    assert [a.get("unit") for a in label.metadata["axes"]] == [None, unit, unit]


def test_napari_shows_the_artifacts(tmp_path):
    """Opened as the README says, through the napari-ome-zarr plugin, into napari's viewer model
    (the viewer without its window: the same layers and colormaps, no OpenGL needed)."""
    missing = [m for m in ("napari", "napari_ome_zarr") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (pip install napari napari-ome-zarr "
                    "to run this check)")
    import dask
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()  # what napari.Viewer does at start: find installed readers
    image_group = written(tmp_path, 0.65)
    viewer = ViewerModel()
    with dask.config.set(scheduler="synchronous"):  # no thread pool left behind
        viewer.open(str(image_group), plugin="napari-ome-zarr")
        [labels] = [layer for layer in viewer.layers if layer._type_string == "labels"]
        assert np.asarray(labels.data[0]).max() == 3
    for value in (1, 2, 3):
        assert labels.get_color(value)[3] > 0, f"label {value} must not be transparent"
    np.testing.assert_allclose(labels.scale[-2:], [0.65, 0.65])
    viewer.layers.clear()
