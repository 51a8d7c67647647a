"""A store written by artifactd 0.1.0 (fixtures/store_layout1.zarr.tar.xz, store layout 1) is
read by today's code, row for row and mask for mask, and today's code appends to it."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from daemon.frames import Frame, FrameKey, FrameMeta, FrameResult
from daemon.results.store import ResultsStore, open_store_readonly

ARCHIVE = Path(__file__).parent / "fixtures" / "store_layout1.zarr.tar.xz"
IDENTITIES = [f"plate1/B0{i + 2}_f1.tif|{2048 + i}|{10**18 + i}" for i in range(3)]


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A fresh copy of the fixture for each test: the committed archive is never written."""
    with tarfile.open(ARCHIVE, "r:xz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "store_layout1.zarr"


def test_the_old_store_reads_row_for_row(old_store: Path) -> None:
    with open_store_readonly(old_store) as store:
        assert store.attributes["layout"] == 1
        assert store.attributes["models"] == {"id": "fixture"}
        assert store.counts == {"frames": 3, "artifacts": 3, "failures": 1, "corrections": 1}
        assert store.stacks() == {"32x32": 2}
        frames = store.frame_table()
        assert list(frames["identity"]) == IDENTITIES
        assert list(frames["well"]) == ["B02", "B03", "B04"]
        assert frames["score"].tolist() == [0.25, 0.5, 0.75]
        assert frames["flagged"].tolist() == [True, False, True]
        assert frames["n_artifacts"].tolist() == [2, 0, 1]
        assert frames["unfamiliarity"].tolist() == [1.0, 2.0, 3.0]
        assert list(frames["mask_stack"]) == ["32x32", "", "32x32"]
        assert frames["mask_index"].tolist() == [0, -1, 1]
        assert list(frames["thumbnail_stack"]) == ["8x8", "", "8x8"]
        artifacts = store.artifact_table()
        assert artifacts["frame_row"].tolist() == [0, 0, 2]
        assert artifacts["label"].tolist() == [1, 2, 1]
        assert artifacts["area_um2"].tolist() == [1.5, 1.5, 3.5]
        assert artifacts["stationary"].tolist() == [False, False, False]
        assert list(store.failure_table()["reason"]) == ["truncated"]
        corrections = store.correction_table()
        assert list(corrections["identity"]) == IDENTITIES[:1]
        assert list(corrections["label"]) == ["clean"]
        assert store.stored_row(IDENTITIES[2]) == 2
        assert store.stored_verdicts(IDENTITIES[1:2])[IDENTITIES[1]]["score"] == 0.5


def test_the_old_masks_and_thumbnails_read_back(old_store: Path) -> None:
    with open_store_readonly(old_store) as store:
        first, clean, last = (store.mask(row) for row in range(3))
        assert first.shape == clean.shape == last.shape == (32, 32)
        assert first.dtype == np.uint16
        assert np.unique(first).tolist() == [0, 1, 2] and int((first == 1).sum()) == 24
        assert not clean.any()
        assert np.argwhere(last == 1).min(axis=0).tolist() == [4, 5]
        thumbnail = store.thumbnail(0)
        assert thumbnail is not None and thumbnail.image.shape == (8, 8)
        assert thumbnail.downsample == 4
        assert store.thumbnail(1) is None
    # An independent reader agrees with the store's own.
    labels = zarr.open_array(old_store / "masks" / "32x32" / "labels" / "artifacts" / "0",
                             mode="r")
    assert np.array_equal(labels[0], first)


def test_todays_code_appends_to_the_old_store(old_store: Path) -> None:
    meta = FrameMeta(source="plate1/B05_f2.tif", plate="plate1", well="B05", field=2)
    labels = np.zeros((32, 32), np.uint16)
    labels[1:4, 1:4] = 1
    frame = Frame(meta=meta, pixels=np.zeros((32, 32), np.uint16), ready_at=0.0,
                  key=FrameKey(meta.source, 99, 10**18 + 9), frame_id=meta.source)
    new = FrameResult(frame=frame, score=0.9, flagged=True, labels=labels,
                      artifacts={"label": np.array([1]), "area_px": np.array([9])},
                      area_fraction=9 / 1024, n_artifacts=1, processed_at="2026-02-01T00:00:00Z")
    with ResultsStore(old_store) as store:
        assert store.append([new]) == [frame.identity]
        assert store.append([new]) == []  # held already: the old identities and the new one
    with open_store_readonly(old_store) as store:
        assert len(store) == 4
        assert list(store.frame_table()["identity"]) == [*IDENTITIES, frame.identity]
        assert store.stacks() == {"32x32": 3}
        assert np.array_equal(store.mask(3), labels)
        assert np.unique(store.mask(0)).tolist() == [0, 1, 2]
        assert store.artifact_table()["frame_row"].tolist() == [0, 0, 2, 3]
