"""The results store: round trips, NGFF labels, committed counts, exactly-once, errors, speed."""

from __future__ import annotations

import errno
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from daemon.frames import ARTIFACT_COLUMNS, Frame, FrameFailure, FrameKey, FrameMeta, FrameResult
from daemon.results import durable
from daemon.results.store import ResultsStore, StoreError, open_store_readonly
from engines import __version__


def make_result(
    i: int,
    *,
    shape: tuple[int, int] = (64, 64),
    n_artifacts: int = 3,
    source: str | None = None,
    streamed: bool = False,
    size: int | None = None,
    labels: np.ndarray | None = None,
    pixel_size_um: float | None = 0.65,
) -> FrameResult:
    """A FrameResult built directly (no model): n_artifacts rectangles labelled 1..n."""
    rng = np.random.default_rng(i)
    src = source or (f"zmq:frame-{i}" if streamed else f"plate1/row{i % 2}/A{i:03d}_f1.tif")
    key = None if streamed else FrameKey(src, size if size is not None else 1000 + i, 10**9 + i)
    if labels is None:
        labels = np.zeros(shape, np.uint16)
        for k in range(n_artifacts):
            y = (7 * k) % max(1, shape[0] - 4)
            x = (5 * k + i) % max(1, shape[1] - 4)
            labels[y : y + 3, x : x + 4] = k + 1
    artifacts = {c: rng.random(n_artifacts).astype(np.float64) * 100 for c in ARTIFACT_COLUMNS}
    artifacts["label"] = np.arange(1, n_artifacts + 1)
    artifacts["area_px"] = np.full(n_artifacts, 12)
    meta = FrameMeta(
        source=src, plate="plate1", well=f"B{i % 12 + 1:02d}", field=i, channel=i % 3, plane=0,
        pixel_size_um=pixel_size_um, acquired_at=f"2026-01-01T00:00:{i % 60:02d}Z",
    )
    frame = Frame(
        meta=meta, pixels=np.zeros(shape, np.uint16), ready_at=0.0, key=key,
        frame_id=src[4:] if streamed else src,
    )
    return FrameResult(
        frame=frame,
        score=0.5 + i / 1000,
        flagged=n_artifacts > 0,
        labels=labels,
        artifacts=artifacts if n_artifacts else {},
        area_fraction=float((labels > 0).mean()) if labels.size else 0.0,
        n_artifacts=n_artifacts,
        processed_at=f"2026-01-01T00:01:{i % 60:02d}.000Z",
    )


ATTRS = {"models": {"detector": "det-abc", "segmenter": "seg-def"}, "config": {"k": [1, 2]}}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "results.zarr"


def test_round_trip_of_tables_masks_and_attributes(path: Path) -> None:
    results = [make_result(i) for i in range(5)] + [make_result(5, streamed=True)]
    results.append(make_result(6, pixel_size_um=None, n_artifacts=0))
    with ResultsStore(path, attributes=ATTRS) as store:
        assert store.append(results[:3]) == [r.frame.identity for r in results[:3]]
        assert store.append(results[3:]) == [r.frame.identity for r in results[3:]]
        assert len(store) == 7

    for store in (open_store_readonly(path), ResultsStore(path)):
        with store:
            assert len(store) == 7
            frames = store.frame_table()
            assert set(frames) >= {
                "identity", "source", "plate", "well", "field", "channel", "plane",
                "pixel_size_um", "score", "flagged", "area_fraction", "n_artifacts",
                "processed_at", "mask_stack", "mask_index",
            }
            assert all(len(v) == 7 for v in frames.values())
            for row, r in enumerate(results):
                meta = r.frame.meta
                assert frames["identity"][row] == r.frame.identity
                assert frames["source"][row] == meta.source
                assert frames["plate"][row] == meta.plate
                assert frames["well"][row] == meta.well
                assert frames["field"][row] == meta.field
                assert frames["channel"][row] == meta.channel
                assert frames["plane"][row] == meta.plane
                assert frames["score"][row] == pytest.approx(r.score)
                assert bool(frames["flagged"][row]) == r.flagged
                assert frames["area_fraction"][row] == pytest.approx(r.area_fraction)
                assert frames["n_artifacts"][row] == r.n_artifacts
                assert frames["processed_at"][row] == r.processed_at
                assert frames["mask_stack"][row] == "64x64"
                assert frames["mask_index"][row] == row
                np.testing.assert_array_equal(store.mask(row), r.labels)
            assert frames["pixel_size_um"][0] == pytest.approx(0.65)
            assert np.isnan(frames["pixel_size_um"][6])
            assert frames["identity"][5] == "zmq:frame-5"

            arts = store.artifact_table()
            assert set(arts) >= {"identity", "source", *ARTIFACT_COLUMNS}
            assert len(arts["label"]) == 18  # 6 frames x 3 artifacts, the last has none
            first = results[1]
            rows = arts["identity"] == first.frame.identity
            np.testing.assert_array_equal(arts["label"][rows], [1, 2, 3])
            np.testing.assert_allclose(
                arts["circularity"][rows], first.artifacts["circularity"], rtol=1e-6
            )
            assert set(arts["frame_row"][rows]) == {1}
            assert list(arts["source"][rows]) == [first.frame.meta.source] * 3

            assert store.attributes["version"] == __version__
            assert store.attributes["models"] == ATTRS["models"]
            assert store.attributes["config"] == ATTRS["config"]
            with pytest.raises(IndexError):
                store.mask(7)


def test_ngff_labels_open_with_ome_zarr_reader(path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    results = [make_result(i) for i in range(3)]
    with ResultsStore(path) as store:
        store.append(results)

    image_group = path / "masks" / "64x64"
    root_attrs = zarr.open_group(str(image_group), mode="r").attrs.asdict()
    assert root_attrs["ome"]["version"] == "0.5"

    location = parse_url(str(image_group))
    assert location is not None and location.version == "0.5"
    nodes = list(Reader(location)())
    image = nodes[0]
    assert image.first(Multiscales) is not None
    assert image.data[0].shape == (3, 64, 64)
    [label] = [n for n in nodes if n.load(Label) is not None]
    assert label.metadata["name"] == "artifacts"
    assert [a["name"] for a in label.metadata["axes"]] == ["t", "y", "x"]
    # dask's default threaded scheduler would leave a thread pool behind
    stack = label.data[0].compute(scheduler="synchronous")
    assert stack.shape == (3, 64, 64)
    for t, r in enumerate(results):
        np.testing.assert_array_equal(stack[t], r.labels)
    label_attrs = zarr.open_group(str(image_group / "labels" / "artifacts"), mode="r").attrs
    assert label_attrs["ome"]["image-label"]["version"] == "0.5"
    labels_attrs = zarr.open_group(str(image_group / "labels"), mode="r").attrs
    assert labels_attrs["ome"]["labels"] == ["artifacts"]

    # The label image opened on its own finds its image through image-label.source.
    nodes = list(Reader(parse_url(str(image_group / "labels" / "artifacts")))())
    assert any(n.load(Label) is not None and n.data[0].shape == (3, 64, 64) for n in nodes)


def test_rows_past_the_committed_count_are_discarded_on_open(path: Path) -> None:
    results = [make_result(i) for i in range(4)]
    with ResultsStore(path) as store:
        store.append(results[:3])

    # A crash half-way through an append: data landed, the committed counts did not.
    root = zarr.open_group(str(path), mode="r+")
    assert root.attrs["committed"]["frames"] == 3
    for name in ("identity", "source", "score", "mask_index"):
        arr = root[f"frames/{name}"]
        arr.resize((5,))
        arr[3:5] = ["junk", "junk"] if arr.dtype.kind in "OTU" else [7, 7]
    stack = root["masks/64x64/labels/artifacts/0"]
    stack.resize((5, 64, 64))
    stack[3:5] = 9
    arts = root["artifacts/label"]
    arts.resize((arts.shape[0] + 2,))

    reader = open_store_readonly(path)  # a reader ignores rows past the count
    assert len(reader) == 3 and len(reader.frame_table()["identity"]) == 3
    reader.close()

    with ResultsStore(path) as store:
        assert len(store) == 3
        raw = zarr.open_group(str(path), mode="r")
        assert raw["frames/identity"].shape == (3,)  # trimmed back
        assert raw["frames/score"].shape == (3,)
        assert raw["masks/64x64/labels/artifacts/0"].shape == (3, 64, 64)
        assert raw["artifacts/label"].shape == (9,)
        assert "junk" not in set(store.frame_table()["identity"])
        assert not store.has("junk")
        assert store.append([results[3]]) == [results[3].frame.identity]
        frames = store.frame_table()
        assert list(frames["identity"]) == [r.frame.identity for r in results]
        assert frames["mask_index"][3] == 3
        np.testing.assert_array_equal(store.mask(3), results[3].labels)


def test_duplicate_identities_are_skipped_across_reopen(path: Path) -> None:
    a, b, c, d = (make_result(i) for i in range(4))
    with ResultsStore(path) as store:
        assert store.append([a, b]) == [a.frame.identity, b.frame.identity]
        assert store.append([b, c, c]) == [c.frame.identity]
        assert store.has(c.frame.identity) and not store.has(d.frame.identity)
    with ResultsStore(path) as store:
        assert store.has(a.frame.identity)
        assert store.append([a, c]) == []
        assert store.append([a, d]) == [d.frame.identity]
        assert len(store) == 4
        assert store.counts["artifacts"] == 12
        # The same file rewritten in place is a new version: a new identity, stored again.
        rewritten = make_result(0, size=5555)
        assert rewritten.frame.meta.source == a.frame.meta.source
        assert store.append([rewritten]) == [rewritten.frame.identity]
        assert len(store) == 5


def test_two_frame_shapes_get_two_stacks(path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    results = [
        make_result(0), make_result(1, shape=(32, 48)), make_result(2),
        make_result(3, shape=(32, 48)), make_result(4, shape=(32, 48)),
    ]
    with ResultsStore(path) as store:
        store.append(results[:2])
        store.append(results[2:])
        assert store.stacks() == {"64x64": 2, "32x48": 3}
        frames = store.frame_table()
        assert list(frames["mask_stack"]) == ["64x64", "32x48", "64x64", "32x48", "32x48"]
        assert list(frames["mask_index"]) == [0, 0, 1, 1, 2]
        for row, r in enumerate(results):
            np.testing.assert_array_equal(store.mask(row), r.labels)
    for name, n, shape in (("64x64", 2, (64, 64)), ("32x48", 3, (32, 48))):
        nodes = list(Reader(parse_url(str(path / "masks" / name)))())
        [label] = [node for node in nodes if node.load(Label) is not None]
        assert label.data[0].shape == (n, *shape)


def test_wide_labels_and_empty_label_images(path: Path) -> None:
    wide = np.zeros((16, 16), np.uint32)
    wide[2:4, 2:4] = 70_000
    wide[5, 5] = 3
    results = [
        make_result(0, labels=wide, n_artifacts=2),
        make_result(1, labels=np.zeros((0, 0), np.uint16), n_artifacts=0, shape=(20, 30)),
        make_result(2, labels=np.array([[0, 1], [2, 0]], np.int64), n_artifacts=2),
    ]
    with ResultsStore(path) as store:
        store.append(results)
        frames = store.frame_table()
        assert list(frames["mask_stack"]) == ["16x16_uint32", "", "2x2"]
        np.testing.assert_array_equal(store.mask(0), wide)
        assert store.mask(1).shape == (20, 30) and not store.mask(1).any()
        np.testing.assert_array_equal(store.mask(2), [[0, 1], [2, 0]])
        assert (frames["height"][1], frames["width"][1]) == (20, 30)
        with pytest.raises(ValueError, match="labels"):
            store.append([make_result(9, labels=np.zeros((2, 2, 2), np.uint16))])
        with pytest.raises(ValueError, match="labels"):
            store.append([make_result(9, labels=np.full((2, 2), -1, np.int32))])
        assert len(store) == 3


def test_failure_table_round_trip(path: Path) -> None:
    failures = [
        FrameFailure(
            "a/b.tif", "unreadable", "a/b.tif: not a TIFF file", FrameKey("a/b.tif", 1, 2)
        ),
        FrameFailure("zmq:7", "too_large", "zmq:7: 70000000 pixels, expected at most 64000000"),
    ]
    with ResultsStore(path) as store:
        store.record_failures(failures)
        store.record_failures([])
        assert len(store) == 0
    with open_store_readonly(path) as store:
        table = store.failure_table()
        assert list(table["source"]) == ["a/b.tif", "zmq:7"]
        assert list(table["reason"]) == ["unreadable", "too_large"]
        assert table["message"][1].startswith("zmq:7:")
        assert all(t.endswith("Z") for t in table["failed_at"])
        with pytest.raises(StoreError, match="read-only"):
            store.record_failures(failures)


def test_unwritable_path_raises_store_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "results.zarr"
    with pytest.raises(StoreError, match=str(target)):
        ResultsStore(target)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod cannot make a folder read-only (see the path-under-a-file test)",
)
def test_read_only_folder_raises_store_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(StoreError, match=str(locked)):
            ResultsStore(locked / "results.zarr")
    finally:
        locked.chmod(0o755)


def test_failed_append_is_not_counted(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = [make_result(i) for i in range(6)]
    store = ResultsStore(path)
    store.append(results[:2])

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path / "frames"))

    with monkeypatch.context() as patch:
        patch.setattr(durable, "patch_file", disk_full)
        with pytest.raises(StoreError, match="disk full") as info:
            store.append(results[2:4])
        assert str(path) in str(info.value)
    assert len(store) == 2
    assert not store.has(results[2].frame.identity)
    assert store.stacks() == {"64x64": 2}

    # A failure at the last step (the commit record) is not counted either.
    real = durable.DurableLocalStore._write_temporary

    def no_commit(self, key, data, folders):
        if key == "zarr.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path / "zarr.json"))
        return real(self, key, data, folders)

    with monkeypatch.context() as patch:
        patch.setattr(durable.DurableLocalStore, "_write_temporary", no_commit)
        with pytest.raises(StoreError, match="disk full"):
            store.append(results[2:4])
    assert len(store) == 2
    assert zarr.open_group(str(path), mode="r").attrs["committed"]["frames"] == 2
    assert open_store_readonly(path).frame_table()["identity"].tolist() == [
        r.frame.identity for r in results[:2]
    ]

    # Space again: the same frames go in, at the right rows.
    assert store.append(results[2:5]) == [r.frame.identity for r in results[2:5]]
    store.close()
    assert not list(path.rglob("*.partial"))
    with ResultsStore(path) as store:
        assert len(store) == 5
        frames = store.frame_table()
        assert list(frames["identity"]) == [r.frame.identity for r in results[:5]]
        assert list(frames["mask_index"]) == [0, 1, 2, 3, 4]
        for row in range(5):
            np.testing.assert_array_equal(store.mask(row), results[row].labels)
        assert store.counts["artifacts"] == 15
        assert set(store.artifact_table()["frame_row"]) == {0, 1, 2, 3, 4}


def test_a_failed_first_append_leaves_the_store_usable(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = [make_result(i) for i in range(3)]
    store = ResultsStore(path)
    with monkeypatch.context() as patch:  # fails after zarr grew the arrays, before the commit
        patch.setattr(durable.DurableLocalStore, "_barrier", _read_only_filesystem)
        with pytest.raises(StoreError, match="not writable"):
            store.append(results)
    assert len(store) == 0
    assert store.append(results) == [r.frame.identity for r in results]
    with open_store_readonly(path) as reader:  # while the writer still has it open
        assert list(reader.frame_table()["identity"]) == [r.frame.identity for r in results]
    store.close()
    with ResultsStore(path) as store:
        assert list(store.frame_table()["identity"]) == [r.frame.identity for r in results]
        assert store.stacks() == {"64x64": 3}
        np.testing.assert_array_equal(store.mask(2), results[2].labels)


def test_writes_wait_until_a_failed_write_is_rolled_back(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = [make_result(i) for i in range(4)]
    store = ResultsStore(path)
    store.append(results[:1])
    with monkeypatch.context() as patch:  # the write fails, and so does reading the store back
        patch.setattr(durable.DurableLocalStore, "_barrier", _read_only_filesystem)
        patch.setattr(zarr, "open_group", _read_only_filesystem)
        with pytest.raises(StoreError, match="not writable"):
            store.append(results[1:3])
        with pytest.raises(StoreError, match="rolled back"):
            store.append(results[1:3])
    assert store.append(results[1:]) == [r.frame.identity for r in results[1:]]
    with open_store_readonly(path) as reader:
        assert list(reader.frame_table()["identity"]) == [r.frame.identity for r in results]
        np.testing.assert_array_equal(reader.mask(3), results[3].labels)
    store.close()


def _read_only_filesystem(*args: object, **kwargs: object) -> None:
    raise OSError(errno.EROFS, "Read-only file system")


def test_one_writer_at_a_time_readers_any_time(path: Path) -> None:
    first = make_result(0)
    store = ResultsStore(path)
    store.append([first])
    with pytest.raises(StoreError, match="another writer"):
        ResultsStore(path)
    reader = open_store_readonly(path)  # while the writer is open
    assert len(reader) == 1
    store.append([make_result(i) for i in range(1, 5)])  # columns now longer than committed
    later = open_store_readonly(path)
    assert len(later) == 5 and len(later.frame_table()["score"]) == 5
    assert len(reader.frame_table()["score"]) == 1  # a reader keeps the rows it opened with
    for r in (reader, later):
        r.close()
    store.close()
    with ResultsStore(path) as again:  # closed: the lock is free
        assert len(again) == 5
    with pytest.raises(StoreError, match="closed"):
        again.frame_table()


def test_paths_that_are_not_stores(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not found"):
        open_store_readonly(tmp_path / "missing.zarr")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(StoreError, match="not empty"):
        ResultsStore(folder)
    with pytest.raises(StoreError, match="not a results store"):
        open_store_readonly(folder)
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").attrs["something"] = 1
    with pytest.raises(StoreError, match="not an artifactd results store"):
        ResultsStore(other)
    with pytest.raises(StoreError, match="not an artifactd results store"):
        open_store_readonly(other)


def test_a_creation_cut_short_is_completed(path: Path) -> None:
    ResultsStore(path).close()
    zarr.open_group(str(path), mode="r+").attrs.put({})  # the root attributes never landed
    with ResultsStore(path, attributes=ATTRS) as store:
        assert store.attributes["models"] == ATTRS["models"]
        store.append([make_result(0)])
    zarr.open_group(str(path), mode="r+").attrs.put({})  # but a store holding rows is not ours
    with pytest.raises(StoreError, match="not an artifactd results store"):
        ResultsStore(path)


def test_columns_in_another_layout_are_written_through_zarr(path: Path) -> None:
    results = [make_result(i) for i in range(3)]
    ResultsStore(path).close()
    frames = zarr.open_group(str(path / "frames"), mode="r+")
    # a compressed number column and an uncompressed string column: no fast path for either
    frames.create_array("score", shape=(0,), chunks=(4,), dtype="float64", overwrite=True)
    frames.create_array("well", shape=(0,), chunks=(4,), dtype=str, compressors=None,
                        overwrite=True)
    with ResultsStore(path) as store:
        store.append(results[:2])
        store.append(results[2:])
        table = store.frame_table()
    assert list(table["score"]) == pytest.approx([r.score for r in results])
    assert list(table["well"]) == [r.frame.meta.well for r in results]
    assert zarr.open_array(str(path / "frames/score"), mode="r")[:].tolist() == pytest.approx(
        [r.score for r in results]
    )


def test_changed_settings_are_kept_in_history(path: Path) -> None:
    with ResultsStore(path, attributes=ATTRS) as store:
        store.append([make_result(0)])
    with ResultsStore(path, attributes=ATTRS) as store:  # unchanged: no history
        assert store.history == []
    newer = {**ATTRS, "models": {"detector": "det-xyz"}}
    with ResultsStore(path, attributes=newer) as store:
        assert store.attributes["models"] == {"detector": "det-xyz"}
        assert store.history[-1]["models"] == ATTRS["models"]
        assert store.history[-1]["frames_before"] == 1
    with ResultsStore(path) as store:  # no attributes given: left as they are
        assert store.attributes["models"] == {"detector": "det-xyz"}


def test_append_speed_four_1080_frames(path: Path) -> None:
    """Reports the time of one append of 4 1080x1080 uint16 frames with 10 artifacts each."""
    batches = [
        [make_result(b * 4 + j, shape=(1080, 1080), n_artifacts=10) for j in range(4)]
        for b in range(7)
    ]
    with ResultsStore(path) as store:
        times = []
        for batch in batches:
            start = time.perf_counter()
            store.append(batch)
            times.append(time.perf_counter() - start)
    median = statistics.median(times[2:]) * 1000
    print(f"\nappend of 4 1080x1080 frames: median {median:.1f} ms, min {min(times) * 1000:.1f} ms")
    # The target is 40 ms on an idle machine; this bound only catches gross regressions on a
    # busy CI runner.
    assert median < 400


def test_temporary_files_left_by_a_crash_are_removed_on_open(path: Path) -> None:
    with ResultsStore(path) as store:
        store.append([make_result(0)])
    stray = path / "frames" / "score" / ".c.0.3f2a.partial"  # an append cut short by kill -9
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half a chunk")
    with ResultsStore(path) as store:
        assert not stray.exists()
        assert len(store) == 1
