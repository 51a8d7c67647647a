"""`artifactd export STORE --ome-zarr-plate OUT.zarr`: an NGFF 0.5 HCS plate that an independent
validator (ome-zarr-models), the ome_zarr reader and napari (headless) all open, with the
artifact labels under each field."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import zarr

from daemon.cli import main as cli_main
from daemon.results.store import ResultsStore, open_store_readonly
from tests.daemon.test_store import make_result
from tests.daemon.test_thumbnails import with_thumbnail

FIELDS = [("B03", 1), ("B03", 2), ("C07", 1), ("H12", 1), ("W0001", 1)]  # the last: a CQ1 number


def plate_result(i: int, well: str, field: int, plate: str = "P1", **kwargs):
    result = make_result(i, source=f"{plate}/{well}_f{field}.tif", n_artifacts=2 if i % 2 else 0,
                         **kwargs)
    meta = dataclasses.replace(result.frame.meta, plate=plate, well=well, field=field)
    frame = dataclasses.replace(result.frame, meta=meta)
    return with_thumbnail(dataclasses.replace(result, frame=frame))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append([plate_result(i, well, field) for i, (well, field) in enumerate(FIELDS)])
    return path


def exported(store_path: Path, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "plate.zarr"
    assert cli_main(["export", str(store_path), "--ome-zarr-plate", str(out), *extra]) == 0
    return out


def test_the_plate_passes_the_ome_zarr_models_validator(store_path: Path, tmp_path: Path, caplog):
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.hcs import HCS
    from ome_zarr_models.v05.image_label import ImageLabel

    with caplog.at_level(logging.WARNING):
        out = exported(store_path, tmp_path)
    assert "'W0001'" in caplog.text and "left out" in caplog.text
    plate = open_ome_zarr(zarr.open_group(out, mode="r"), version="0.5")
    assert isinstance(plate, HCS)
    meta = plate.ome_attributes.plate
    assert [w.path for w in meta.wells] == ["B/3", "C/7", "H/12"]
    assert len(meta.rows) == 8 and len(meta.columns) == 12 and meta.field_count == 2
    well = plate.get_well_group(0)
    assert [i.path for i in well.ome_attributes.well.images] == ["0", "1"]
    label = open_ome_zarr(zarr.open_group(out / "B" / "3" / "1" / "labels" / "artifacts", mode="r"),
                          version="0.5")
    assert isinstance(label, ImageLabel)


def test_each_field_is_its_thumbnail_with_its_labels(store_path: Path, tmp_path: Path):
    out = exported(store_path, tmp_path)
    with open_store_readonly(store_path) as reader:
        for row, (well, field) in enumerate(FIELDS[:4]):
            image_path = out / well[0] / str(int(well[1:])) / str(field - 1)
            group = zarr.open_group(image_path, mode="r")
            thumbnail = reader.thumbnail(row)
            np.testing.assert_array_equal(group["0"][:], thumbnail.image)
            np.testing.assert_array_equal(group["labels/artifacts/0"][:], thumbnail.labels)
            assert group.attrs["artifactd"]["source"] == f"P1/{well}_f{field}.tif"
            scale = group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
            assert scale == [{"type": "scale", "scale": [0.65 * 4, 0.65 * 4]}]


def test_the_ome_zarr_reader_sees_a_plate_with_labels(store_path: Path, tmp_path: Path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Plate, Reader

    out = exported(store_path, tmp_path)
    [node] = list(Reader(parse_url(str(out)))())
    assert node.load(Plate) is not None
    assert node.data[0].shape == (8 * 16, 12 * 16)  # the 96-well grid of 16 x 16 thumbnails
    fields = list(Reader(parse_url(str(out / "C" / "7" / "0")))())
    assert any(n.load(Label) is not None for n in fields)


def test_napari_opens_the_plate_with_its_labels(store_path: Path, tmp_path: Path):
    """Through the napari-ome-zarr plugin into napari's viewer model (no window, no OpenGL)."""
    missing = [m for m in ("napari", "napari_ome_zarr") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (pip install napari napari-ome-zarr "
                    "to run this check)")
    import dask
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    out = exported(store_path, tmp_path)
    viewer = ViewerModel()
    with dask.config.set(scheduler="synchronous"):
        viewer.open(str(out), plugin="napari-ome-zarr")
        kinds = {layer._type_string: layer for layer in viewer.layers}
        assert set(kinds) == {"image", "labels"}
        plate = np.asarray(kinds["labels"].data[0] if isinstance(kinds["labels"].data, list)
                           else kinds["labels"].data)
        assert plate.shape[-2:] == (8 * 16, 12 * 16)
        assert plate.max() == 2  # B03 field 2 holds two artifacts
        assert kinds["labels"].get_color(1)[3] > 0
    viewer.layers.clear()


def test_several_plates_need_plate_and_bad_requests_are_one_sentence(
    store_path: Path, tmp_path: Path, capsys
):
    with ResultsStore(store_path) as store:
        store.append([plate_result(20 + i, f"A{i + 1:02d}", 1, plate="P2") for i in range(3)])
    out = tmp_path / "p.zarr"
    assert cli_main(["export", str(store_path), "--ome-zarr-plate", str(out)]) == 1
    assert "2 plates with thumbnails ('P1', 'P2'); expected --plate NAME" in capsys.readouterr().err
    assert cli_main(["export", str(store_path), "--ome-zarr-plate", str(out), "--plate", "P9"]) == 1
    assert "--plate 'P9': no frames with thumbnails" in capsys.readouterr().err
    assert not out.exists()
    assert cli_main(["export", str(store_path), "--ome-zarr-plate", str(out), "--plate", "P2"]) == 0
    assert [w["path"] for w in zarr.open_group(out, mode="r").attrs["ome"]["plate"]["wells"]] == \
        ["A/1", "A/2", "A/3"]
    assert cli_main(["export", str(store_path), "--ome-zarr-plate", str(out), "--plate", "P2"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["export", str(store_path), "--plate", "P2", "--frames", "f.csv"]) == 2
    assert "--plate says which plate" in capsys.readouterr().err


def test_a_384_well_plate_gets_a_384_grid(tmp_path: Path):
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append([plate_result(0, "A01", 1), plate_result(1, "P24", 1)])
    out = exported(path, tmp_path)
    plate = zarr.open_group(out, mode="r").attrs["ome"]["plate"]
    assert (len(plate["rows"]), len(plate["columns"])) == (16, 24)
    assert plate["wells"][-1] == {"path": "P/24", "rowIndex": 15, "columnIndex": 23}


def test_a_store_without_thumbnails_says_so(tmp_path: Path, capsys):
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append([make_result(0)])
    assert cli_main(["export", str(path), "--ome-zarr-plate", str(tmp_path / "p.zarr")]) == 1
    assert "holds no thumbnails; expected frames stored with [thumbnails] enabled" in \
        capsys.readouterr().err
