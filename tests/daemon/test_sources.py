"""Both sources are a daemon.sources.base.Source: the service treats them alike."""

from __future__ import annotations

import time
from pathlib import Path

from daemon.config import InputConfig, ZmqConfig
from daemon.ops.metrics import Metrics
from daemon.sources.base import Source
from daemon.sources.fs import FolderSource
from daemon.sources.zmq import ZmqSource


def test_the_folder_and_the_stream_are_sources(tmp_path: Path) -> None:
    folder = FolderSource(InputConfig(folder=str(tmp_path)), lambda ready: None,
                          is_done=lambda key: False)
    stream = ZmqSource(ZmqConfig(enabled=True, endpoint="tcp://127.0.0.1:0"),
                       lambda frame: None, Metrics())
    assert isinstance(folder, Source)
    assert isinstance(stream, Source)


def test_a_stream_has_no_backlog_and_names_nothing_left_behind() -> None:
    stream = ZmqSource(ZmqConfig(enabled=True, endpoint="tcp://127.0.0.1:0"),
                       lambda frame: None, Metrics())
    with stream:
        assert stream.backlog_done
        assert stream.not_handed_on == {}


def test_a_folder_backlog_is_done_once_listed(tmp_path: Path) -> None:
    handed: list = []
    folder = FolderSource(InputConfig(folder=str(tmp_path)), handed.append,
                          is_done=lambda key: False)
    folder.start()
    try:
        assert folder.not_handed_on == {}
        for _ in range(100):
            if folder.backlog_done:
                break
            time.sleep(0.05)
        assert folder.backlog_done
    finally:
        folder.stop()
        folder.join()
