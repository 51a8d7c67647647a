"""The folder source against real watchdog observers on a temporary folder."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from daemon.config import InputConfig
from daemon.frames import FrameKey, ReadyFile
from daemon.sources.fs import FolderSource
from tests.daemon.badfiles import tiff_bytes

FRAME = tiff_bytes(np.arange(128 * 128, dtype=np.uint16).reshape(128, 128))


class Collector:
    """on_ready for the tests: records each file and the bytes it held when handed on."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.items: list[ReadyFile] = []
        self.contents: dict[str, bytes] = {}
        self.times: dict[str, float] = {}
        self._delay_s = delay_s
        self._changed = threading.Condition()

    def __call__(self, item: ReadyFile) -> None:
        data = item.path.read_bytes()
        with self._changed:
            self.items.append(item)
            self.contents[item.key.source] = data
            self.times[item.key.source] = time.monotonic()
            self._changed.notify_all()
        time.sleep(self._delay_s)  # a full pipeline: the source must wait, not drop

    def sources(self) -> list[str]:
        with self._changed:
            return [item.key.source for item in self.items]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.items) >= count, timeout)
        return self.sources()


@contextmanager
def watching(
    folder: Path,
    collector: Collector,
    *,
    is_done: Callable[[FrameKey], bool] = lambda key: False,
    **config: object,
) -> Iterator[FolderSource]:
    settings: dict[str, object] = {"settle_s": 5.0, **config}
    source = FolderSource(InputConfig(**settings), collector, is_done=is_done,  # type: ignore[arg-type]
                          root=folder)
    source.start()
    try:
        yield source
    finally:
        source.stop()


def write_chunked(path: Path, data: bytes, *, chunks: int = 20, pause_s: float = 0.02) -> float:
    """Write like an instrument: open, write pieces with pauses, close; returns when closed."""
    step = -(-len(data) // chunks)
    with open(path, "wb") as fh:
        for start in range(0, len(data), step):
            fh.write(data[start : start + step])
            fh.flush()
            time.sleep(pause_s)
    return time.monotonic()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_chunked_write_is_handed_on_once_after_close(tmp_path: Path) -> None:
    collector = Collector()
    closed_at: list[float] = []
    with watching(tmp_path, collector):
        writer = threading.Thread(
            target=lambda: closed_at.append(write_chunked(tmp_path / "r01c01f01.tif", FRAME)))
        writer.start()
        writer.join()
        assert collector.wait_for(1, timeout=3.0) == ["r01c01f01.tif"]  # long before settle_s
        time.sleep(0.5)
    assert collector.sources() == ["r01c01f01.tif"]
    assert collector.contents["r01c01f01.tif"] == FRAME
    assert collector.times["r01c01f01.tif"] >= closed_at[0]
    item = collector.items[0]
    st = (tmp_path / "r01c01f01.tif").stat()
    assert item.key == FrameKey("r01c01f01.tif", st.st_size, st.st_mtime_ns)
    assert item.path == tmp_path / "r01c01f01.tif" and item.ready_at <= time.monotonic()


def test_write_then_rename(tmp_path: Path) -> None:
    collector = Collector()
    with watching(tmp_path, collector):
        write_chunked(tmp_path / "frame.tif.part", FRAME)
        time.sleep(0.2)
        assert collector.sources() == []
        os.replace(tmp_path / "frame.tif.part", tmp_path / "frame.tif")
        assert collector.wait_for(1, timeout=3.0) == ["frame.tif"]
        time.sleep(0.3)
    assert collector.sources() == ["frame.tif"]
    assert collector.contents["frame.tif"] == FRAME


def test_writer_that_never_closes_completes_by_settling(tmp_path: Path) -> None:
    collector = Collector()
    with watching(tmp_path, collector, settle_s=0.4):
        # Closed after the hand-over: same size and mtime, so not handed on again.
        with open(tmp_path / "open.tif", "wb") as fh:
            fh.write(FRAME[:1000])
            fh.flush()
            time.sleep(0.25)
            assert collector.sources() == []  # still changing
            fh.write(FRAME[1000:])
            fh.flush()
            started = time.monotonic()
            assert collector.wait_for(1, timeout=5.0) == ["open.tif"]
            assert time.monotonic() - started >= 0.35
        time.sleep(0.5)
    assert collector.sources() == ["open.tif"]
    assert collector.contents["open.tif"] == FRAME


def test_temporary_and_hidden_names_are_ignored(tmp_path: Path) -> None:
    collector = Collector()
    (tmp_path / ".hidden").mkdir()
    with watching(tmp_path, collector, settle_s=0.2):
        for name in ("a.tif.part", "b.tif~", "c.tmp", ".d.tif", ".hidden/e.tif", "f.png",
                     "notes.txt"):
            (tmp_path / name).write_bytes(FRAME)
        (tmp_path / "G.OME.TIFF").write_bytes(FRAME)
        assert collector.wait_for(1) == ["G.OME.TIFF"]
        time.sleep(0.6)
    assert collector.sources() == ["G.OME.TIFF"]


def test_backlog_first_oldest_first_then_live(tmp_path: Path) -> None:
    sub = tmp_path / "plate" / "Images"
    sub.mkdir(parents=True)
    now = time.time()
    for age, name in ((30, "b.tif"), (50, "plate/Images/a.tif"), (10, "c.tif")):
        (tmp_path / name).write_bytes(FRAME)
        os.utime(tmp_path / name, (now - age, now - age))
    collector = Collector(delay_s=0.05)
    with watching(tmp_path, collector) as source:
        (tmp_path / "live.tif").write_bytes(FRAME)
        assert collector.wait_for(4) == ["plate/Images/a.tif", "b.tif", "c.tif", "live.tif"]
        assert source.backlog_done


def test_backlog_done_waits_for_a_file_still_being_written(tmp_path: Path) -> None:
    (tmp_path / "young.tif").write_bytes(FRAME[:100])  # written just now: maybe still growing
    collector = Collector()
    with watching(tmp_path, collector, settle_s=0.5) as source:
        time.sleep(0.2)
        assert not source.backlog_done and collector.sources() == []
        assert wait_until(lambda: source.backlog_done, timeout=3.0)
        assert collector.sources() == ["young.tif"]


def test_empty_backlog_is_done_at_once(tmp_path: Path) -> None:
    with watching(tmp_path, Collector()) as source:
        assert wait_until(lambda: source.backlog_done, timeout=2.0)


def test_files_already_done_are_not_handed_on(tmp_path: Path) -> None:
    for name in ("done.tif", "todo.tif"):
        (tmp_path / name).write_bytes(FRAME)
        os.utime(tmp_path / name, (time.time() - 60, time.time() - 60))
    asked: list[FrameKey] = []

    def is_done(key: FrameKey) -> bool:
        asked.append(key)
        return key.source == "done.tif"

    collector = Collector()
    with watching(tmp_path, collector, is_done=is_done) as source:
        assert wait_until(lambda: source.backlog_done)
        time.sleep(0.2)
    assert collector.sources() == ["todo.tif"]
    assert {key.source for key in asked} == {"done.tif", "todo.tif"}


def test_polling_observer(tmp_path: Path) -> None:
    collector = Collector()
    with watching(tmp_path, collector, polling=True, poll_interval_s=0.1, settle_s=0.3):
        write_chunked(tmp_path / "share.tif", FRAME, chunks=5, pause_s=0.05)
        assert collector.wait_for(1, timeout=5.0) == ["share.tif"]
        time.sleep(0.5)
    assert collector.sources() == ["share.tif"]
    assert collector.contents["share.tif"] == FRAME


def test_blocking_on_ready_loses_nothing(tmp_path: Path) -> None:
    collector = Collector(delay_s=0.1)
    names = [f"r01c{i:02d}f01.tif" for i in range(20)]
    with watching(tmp_path, collector):
        for name in names:
            write_chunked(tmp_path / name, FRAME, chunks=2, pause_s=0.001)
        assert sorted(collector.wait_for(20, timeout=15.0)) == sorted(names)
        time.sleep(0.3)
    assert sorted(collector.sources()) == sorted(names)  # each exactly once
    assert all(collector.contents[name] == FRAME for name in names)


def test_rewritten_file_is_handed_on_again(tmp_path: Path) -> None:
    collector = Collector()
    with watching(tmp_path, collector):
        (tmp_path / "x.tif").write_bytes(FRAME)
        collector.wait_for(1)
        (tmp_path / "x.tif").write_bytes(FRAME + b"\0" * 10)
        collector.wait_for(2)
    sizes = [item.key.size for item in collector.items]
    assert sizes == [len(FRAME), len(FRAME) + 10]


def test_zero_byte_file_is_handed_on_only_after_settling(tmp_path: Path) -> None:
    collector = Collector()
    with watching(tmp_path, collector, settle_s=0.5):
        started = time.monotonic()
        (tmp_path / "empty.tif").touch()
        assert collector.wait_for(1, timeout=5.0) == ["empty.tif"]
        assert time.monotonic() - started >= 0.45
    assert collector.items[0].key.size == 0


def test_subfolders_and_moved_in_folders(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
                                         ) -> None:
    outside = tmp_path_factory.mktemp("staging")
    (outside / "run2").mkdir()
    (outside / "run2" / "f.tif").write_bytes(FRAME)
    collector = Collector()
    with watching(tmp_path, collector, settle_s=0.3):
        (tmp_path / "run1").mkdir()
        write_chunked(tmp_path / "run1" / "e.tif", FRAME, chunks=2)
        assert collector.wait_for(1) == ["run1/e.tif"]
        os.rename(outside / "run2", tmp_path / "run2")  # arrives whole, with no close event
        assert collector.wait_for(2) == ["run1/e.tif", "run2/f.tif"]


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    source = FolderSource(InputConfig(), Collector(), is_done=lambda key: False,
                          root=tmp_path / "absent")
    with pytest.raises(ValueError, match=r"input\.folder: .*absent"):
        source.start()
    source.stop()


def test_source_files_are_never_modified(tmp_path: Path) -> None:
    (tmp_path / "keep.tif").write_bytes(FRAME)
    before = (tmp_path / "keep.tif").stat()
    collector = Collector()
    with watching(tmp_path, collector, settle_s=0.0):
        collector.wait_for(1)
    after = (tmp_path / "keep.tif").stat()
    assert (after.st_size, after.st_mtime_ns, after.st_mode) == (
        before.st_size, before.st_mtime_ns, before.st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]


def test_versions_the_journal_holds_are_forgotten_and_not_handed_on_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded memory: handed-on versions that are done are dropped from the source's own
    bookkeeping (the journal answers for them), while one still in the pipeline is kept, so a
    later event for either hands nothing on twice."""
    from daemon.sources import fs

    monkeypatch.setattr(fs, "HANDED_LIMIT", 8)
    collector = Collector()
    in_pipeline = "f00.tif"

    def is_done(key: FrameKey) -> bool:  # the journal: everything handed on is done, but one
        return key.source != in_pipeline and key.source in collector.sources()

    names = [f"f{i:02d}.tif" for i in range(40)]
    with watching(tmp_path, collector, is_done=is_done, settle_s=0.3) as source:
        for name in names:
            (tmp_path / name).write_bytes(FRAME)
        assert sorted(collector.wait_for(40)) == names
        remembered = len(source._handed)  # the bookkeeping this test is about
        assert remembered <= 8, remembered
        for name in (in_pipeline, "f01.tif", "f39.tif"):  # a new event, the same version
            os.chmod(tmp_path / name, 0o644)
        time.sleep(1.5)
    assert sorted(collector.sources()) == names  # each handed on once
