"""Thumbnails: made from the frame and its labels, stored with the frame in one append, read back
by the store, zarr and the NGFF validator, and never left half-written by a failed append."""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

import numpy as np
import pytest
import zarr

from daemon.frames import FrameResult
from daemon.results import durable
from daemon.results.store import ResultsStore, StoreError, open_store_readonly
from daemon.results.thumbnails import LABEL_DTYPE, make_thumbnail
from tests.daemon.test_store import make_result


def frame_pixels(i: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    pixels = rng.normal(2000, 300, shape) + np.linspace(0, 800, shape[1])
    return pixels.clip(0, 65535).astype(np.uint16)


def with_thumbnail(result: FrameResult, downsample: int = 4) -> FrameResult:
    """A result whose frame has real pixels, and their thumbnail, as the pipeline makes it."""
    pixels = frame_pixels(len(result.frame.meta.source), result.labels.shape or (24, 24))
    frame = dataclasses.replace(result.frame, pixels=pixels)
    return dataclasses.replace(result, frame=frame,
                               thumbnail=make_thumbnail(pixels, result.labels, downsample))


def test_a_thumbnail_is_a_quarter_scale_uint8_copy_with_its_labels():
    pixels = frame_pixels(0, (1080, 1080))
    labels = np.zeros((1080, 1080), np.uint16)
    labels[100:180, 200:300] = 1
    labels[500, 700] = 2  # one pixel: smaller than a block, must still show
    thumbnail = make_thumbnail(pixels, labels, 4)
    assert thumbnail.image.shape == thumbnail.labels.shape == (270, 270)
    assert thumbnail.image.dtype == np.uint8 and thumbnail.labels.dtype == LABEL_DTYPE
    assert thumbnail.downsample == 4
    # Contrast stretched: the frame's range fills the bytes.
    assert thumbnail.image.min() <= 2 and thumbnail.image.max() >= 253
    assert set(np.unique(thumbnail.labels)) == {0, 1, 2}
    assert thumbnail.labels[125, 175] == 2
    assert (thumbnail.labels == 1).sum() == 20 * 25
    # The image follows the frame: block means, in order (the frame brightens to the right).
    assert thumbnail.image[:, -10:].mean() > thumbnail.image[:, :10].mean()


def test_sizes_that_do_not_divide_and_other_frames():
    odd = make_thumbnail(frame_pixels(1, (101, 67)), np.zeros((0, 0), np.uint16), 4)
    assert odd.image.shape == odd.labels.shape == (26, 17) and not odd.labels.any()
    flat = make_thumbnail(np.full((40, 40), 7, np.uint16), np.zeros((40, 40), np.uint16), 2)
    assert flat.image.shape == (20, 20) and set(np.unique(flat.image)) == {128}
    channels = np.stack([frame_pixels(2), np.zeros((64, 64), np.uint16)])  # (C, H, W)
    first = make_thumbnail(channels, np.zeros((64, 64), np.uint16), 1)
    np.testing.assert_array_equal(first.image, make_thumbnail(channels[0], first.labels, 1).image)


def test_thumbnails_round_trip_through_the_store(tmp_path: Path):
    results = [with_thumbnail(make_result(i)) for i in range(3)]
    results.append(make_result(3))  # thumbnails turned off: none
    results.append(with_thumbnail(make_result(4, shape=(40, 48)), downsample=2))
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append(results[:2])
        store.append(results[2:])
        for row in (0, 2, 4):
            got = store.thumbnail(row)
            np.testing.assert_array_equal(got.image, results[row].thumbnail.image)
            np.testing.assert_array_equal(got.labels, results[row].thumbnail.labels)
        assert store.thumbnail(3) is None
        with pytest.raises(IndexError):
            store.thumbnail(5)
    with open_store_readonly(path) as reader:
        table = reader.frame_table()
        assert list(table["thumbnail_stack"]) == ["16x16", "16x16", "16x16", "", "20x24"]
        assert list(table["thumbnail_index"]) == [0, 1, 2, -1, 0]
        assert reader.thumbnail(4).downsample == 2
        np.testing.assert_array_equal(reader.thumbnail(1).image, results[1].thumbnail.image)
    root = zarr.open_group(path, mode="r")
    assert root.attrs["committed"]["thumbnails"] == {"16x16": 3, "20x24": 1}
    # Through zarr alone, as napari or later review reads them.
    np.testing.assert_array_equal(root["thumbnails/16x16/0"][2], results[2].thumbnail.image)
    np.testing.assert_array_equal(root["thumbnails/16x16/labels/artifacts/0"][0],
                                  results[0].thumbnail.labels)


def test_the_thumbnail_stack_passes_the_ome_zarr_models_validator(tmp_path: Path):
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append([with_thumbnail(make_result(i, pixel_size_um=0.65)) for i in range(2)])
    stack = path / "thumbnails" / "16x16"
    assert isinstance(open_ome_zarr(zarr.open_group(stack, mode="r"), version="0.5"), Image)
    label = open_ome_zarr(zarr.open_group(stack / "labels" / "artifacts", mode="r"), version="0.5")
    assert isinstance(label, ImageLabel)
    scale = zarr.open_group(stack, mode="r").attrs["ome"]["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"] == [1.0, 0.65 * 4, 0.65 * 4]


def test_a_failed_append_leaves_no_thumbnail_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "results.zarr"
    results = [with_thumbnail(make_result(i)) for i in range(4)]
    store = ResultsStore(path)
    store.append(results[:1])

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(durable.DurableLocalStore, "_barrier", disk_full)
        with pytest.raises(StoreError, match="disk full"):
            store.append(results[1:3])
    assert zarr.open_group(path, mode="r").attrs["committed"]["thumbnails"] == {"16x16": 1}
    store.append(results[1:])  # space again: the same frames land at the next rows
    np.testing.assert_array_equal(store.thumbnail(3).image, results[3].thumbnail.image)
    store.close()
    with open_store_readonly(path) as reader:
        assert list(reader.frame_table()["thumbnail_index"]) == [0, 1, 2, 3]
        assert zarr.open_group(path, mode="r")["thumbnails/16x16/0"].shape == (4, 16, 16)


def test_a_stack_an_interrupted_append_created_is_removed(tmp_path: Path, monkeypatch):
    """A crash after the new stack's arrays were created, before the commit: the next writer
    removes the stack no commit counts."""
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append([make_result(0)])  # no thumbnail: no stack yet
        real = durable.DurableLocalStore._write_temporary

        def no_commit(self, key, data, folders):
            if key == "zarr.json":
                raise OSError(errno.ENOSPC, "No space left on device", str(path / key))
            return real(self, key, data, folders)

        with monkeypatch.context() as patch:
            patch.setattr(durable.DurableLocalStore, "_write_temporary", no_commit)
            with pytest.raises(StoreError):
                store.append([with_thumbnail(make_result(1))])
    assert (path / "thumbnails" / "16x16").exists()
    with ResultsStore(path) as store:
        assert not (path / "thumbnails" / "16x16").exists()
        store.append([with_thumbnail(make_result(1))])
        assert store.thumbnail(1) is not None


def test_a_store_written_before_thumbnails_opens_and_grows(tmp_path: Path):
    """Older stores have no thumbnail columns or group: readers see none, a writer adds them."""
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append([make_result(0)])
    root = zarr.open_group(path, mode="r+")
    for name in ("thumbnail_stack", "thumbnail_index"):
        del root[f"frames/{name}"]
    committed = dict(root.attrs["committed"])
    committed.pop("thumbnails")
    root.attrs["committed"] = committed
    with open_store_readonly(path) as reader:
        assert reader.thumbnail(0) is None
        assert list(reader.frame_table()["thumbnail_index"]) == [-1]
    with ResultsStore(path) as store:
        store.append([with_thumbnail(make_result(1))])
        assert store.thumbnail(0) is None and store.thumbnail(1) is not None


def test_a_frame_without_artifacts_stores_no_label_chunk_but_reads_zeros(tmp_path: Path):
    clean, dirty = with_thumbnail(make_result(0, n_artifacts=0)), with_thumbnail(make_result(1))
    path = tmp_path / "results.zarr"
    chunks = path / "thumbnails" / "16x16" / "labels" / "artifacts" / "0" / "c"
    with ResultsStore(path) as store:
        store.append([clean, dirty])
        assert not (chunks / "0").exists() and (chunks / "1").exists()
        assert not store.thumbnail(0).labels.any()
        # A chunk left at the next index by an append that failed after landing it: a clean
        # frame stored there overwrites it rather than inheriting its artifacts.
        import shutil

        shutil.copytree(chunks / "1", chunks / "2")
        store.append([with_thumbnail(make_result(2, n_artifacts=0))])
        assert not store.thumbnail(2).labels.any()
    root = zarr.open_group(path, mode="r")
    assert not root["thumbnails/16x16/labels/artifacts/0"][0].any()
