"""The folder source: hands on each TIFF an instrument writes into the input folder, once complete.

Two threads, as in watchdog's own emitter/dispatcher split: the watchdog observer only notes
which paths changed (it never blocks), and one feeder thread decides when a file is complete and
calls `on_ready`, which may block for as long as the pipeline is full. Meanwhile frames wait on
disk: the feeder's pending set holds paths, not pixels, one entry per path.

A file counts as complete when
- it is closed after writing (inotify close-write), or
- it is moved into place (write `x.tif.part`, then rename to `x.tif`), or
- its size and mtime have not changed for `input.settle_s` (writers that never close or rename,
  files copied in from elsewhere, network shares watched by polling, which has no close events).
A zero-byte file is never complete on close alone (writers often create, then reopen); once
settled it is handed on so the decoder can report it.

The user's files are only ever stat'ed here: never opened for writing, moved or deleted.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.config import ConfigError, InputConfig
from daemon.frames import FrameKey, ReadyFile
from daemon.threads import StoppableThread

logger = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".part", ".tmp", "~")


class _Change(enum.Enum):
    WRITTEN = "written"  # created or modified: complete once it settles (or is closed)
    GONE = "gone"  # deleted or moved away


@dataclass(slots=True)
class _Settling:
    size: int
    mtime_ns: int
    since: float  # monotonic time this (size, mtime) was first seen


@dataclass(frozen=True, slots=True)
class _Ready:
    ready_at: float
    settled: bool  # judged complete by settling (zero-byte files are handed on only then)


# How many handed-on versions are remembered before those the journal holds are forgotten.
HANDED_LIMIT = 1024


class FolderSource:
    """Watches `root` (default: input.folder) and calls `on_ready` once per complete file version.

    `is_done(key)` says whether an earlier run already processed that version (the journal).
    `on_ready` is called from one thread only and may block; it must return once the pipeline
    is stopping, or `stop()` waits for it.
    """

    def __init__(
        self,
        config: InputConfig,
        on_ready: Callable[[ReadyFile], None],
        *,
        is_done: Callable[[FrameKey], bool],
        root: Path | None = None,
    ) -> None:
        self._config = config
        self._root = os.path.abspath(root if root is not None else config.folder)
        self._on_ready = on_ready
        self._is_done = is_done
        self._tick = min(0.5, max(0.05, config.settle_s / 4))
        # Shared with the watchdog thread: path -> latest change, in arrival order.
        self._changes: dict[str, float | _Change] = {}  # float: seen complete at that time
        self._wakeup = threading.Condition()
        # Feeder thread only.
        self._ready: dict[str, _Ready] = {}
        self._settling: dict[str, _Settling] = {}
        # path -> (size, mtime_ns) handed on, so a second event for a version does not hand it on
        # again. Versions the journal holds are forgotten when it grows (_forget_done): the
        # journal answers for them, so memory stays bounded on a screen of any length.
        self._handed: dict[str, tuple[int, int]] = {}
        self._handed_limit = HANDED_LIMIT
        self._backlog_left: set[str] = set()
        self._not_handed: dict[str, str] = {}  # path -> why it could not be handed on
        self._backlog_done = threading.Event()
        self._observer: BaseObserver | None = None
        self._feeder = _Feeder(self)

    @property
    def not_handed_on(self) -> dict[str, str]:
        """Files that could not be handed on (path -> why); they stay on disk, not done."""
        return dict(self._not_handed)

    @property
    def backlog_done(self) -> bool:
        """True once every file present at start() has been handed on (or found done)."""
        return self._backlog_done.is_set()

    def start(self) -> None:
        """Watch, list what is already there (the backlog), then start handing on.

        Watching starts before the listing, so a file written meanwhile is seen by one or both.
        """
        if not os.path.isdir(self._root):
            raise ConfigError(f"input.folder: {self._root} is not a folder; expected an "
                              "existing folder to watch")
        self._observer = self._start_observer()
        self._scan_backlog()
        self._feeder.start()

    def stop(self) -> None:
        """Stop intake and join the threads (waits for an on_ready call in progress)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        self._feeder.stop()
        if self._feeder.is_alive():
            self._feeder.join()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the feeder thread to end (after stop(), or if it failed)."""
        if self._feeder.is_alive():
            self._feeder.join(timeout)

    # -- watchdog thread ---------------------------------------------------------------------

    def _note(self, path: str, change: float | _Change) -> None:
        if self._wanted(path):
            with self._wakeup:
                self._changes[path] = change
                self._wakeup.notify()

    def _wanted(self, path: str) -> bool:
        return is_frame_file(os.path.relpath(path, self._root), self._config)

    def _start_observer(self) -> BaseObserver:
        handler = _EventHandler(self)
        if not self._config.polling:
            observer = Observer()
            try:
                observer.schedule(handler, self._root, recursive=self._config.recursive)
                observer.start()
                return observer
            except OSError as exc:  # e.g. the inotify watch limit on a very large tree
                logger.warning("cannot watch %s with inotify (%s); polling every %.1f s instead",
                               self._root, exc, self._config.poll_interval_s)
                observer.stop()
        observer = PollingObserver(timeout=self._config.poll_interval_s)
        observer.schedule(handler, self._root, recursive=self._config.recursive)
        observer.start()
        return observer

    # -- feeder thread -----------------------------------------------------------------------

    def _feed(self, thread: StoppableThread) -> None:
        next_check = 0.0
        while thread.should_keep_running():
            self._take_changes()
            now = time.monotonic()
            if now >= next_check:
                self._check_settling(now)
                next_check = now + self._tick
            if self._ready:
                path = next(iter(self._ready))
                self._hand_on(path, self._ready.pop(path))
                continue
            with self._wakeup:
                if not self._changes and thread.should_keep_running():
                    self._wakeup.wait(max(0.0, next_check - time.monotonic()))

    def _wake(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    def _scan_backlog(self) -> None:
        found = sorted((st.st_mtime_ns, path) for path, st in frame_files(self._root, self._config))
        now, wall_ns = time.monotonic(), time.time_ns()
        settle_ns = int(self._config.settle_s * 1e9)
        self._backlog_left = {path for _, path in found}
        for mtime_ns, path in found:
            if wall_ns - mtime_ns >= settle_ns:
                self._ready[path] = _Ready(now, settled=True)
            else:  # still being written when we started: its close event or settling decides
                self._settling[path] = _Settling(-1, -1, now)
        logger.info("%d file(s) already in %s", len(found), self._root)
        self._resolve_backlog()

    def _take_changes(self) -> None:
        with self._wakeup:
            changes, self._changes = self._changes, {}
        for path, change in changes.items():
            if change is _Change.GONE:
                self._forget(path)
                self._handed.pop(path, None)
            elif change is _Change.WRITTEN:
                self._ready.pop(path, None)
                self._settling.setdefault(path, _Settling(-1, -1, time.monotonic()))
            else:
                self._ready[path] = _Ready(change, settled=False)

    def _check_settling(self, now: float) -> None:
        settle_s = self._config.settle_s
        for path, seen in list(self._settling.items()):
            try:
                st = os.stat(path)
            except OSError:
                self._forget(path)
                continue
            if (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
                self._settling[path] = _Settling(st.st_size, st.st_mtime_ns, now)
            elif now - seen.since >= settle_s:
                del self._settling[path]
                self._ready[path] = _Ready(now, settled=True)

    def _hand_on(self, path: str, ready: _Ready) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                logger.warning("cannot stat %s (%s); skipping it", path, exc)
            self._forget(path)
            return
        if not stat.S_ISREG(st.st_mode):
            self._forget(path)
            return
        if st.st_size == 0 and not ready.settled:
            self._settling.setdefault(path, _Settling(-1, -1, time.monotonic()))
            return
        self._settling.pop(path, None)
        version = (st.st_size, st.st_mtime_ns)
        if self._handed.get(path) != version:
            key = self._key(path, version)
            try:
                if not self._is_done(key):
                    self._on_ready(ReadyFile(Path(path), key, ready.ready_at))
                self._handed[path] = version
                self._not_handed.pop(path, None)
                if len(self._handed) >= self._handed_limit:
                    self._forget_done()
            except Exception as exc:
                logger.exception("handing on %s failed; it stays on disk for the next run", path)
                self._not_handed[path] = f"{type(exc).__name__}: {exc}"
        self._resolve_backlog(path)

    def _key(self, path: str, version: tuple[int, int]) -> FrameKey:
        return FrameKey(source_name(os.path.relpath(path, self._root)), *version)

    def _forget_done(self) -> None:
        """Drop the handed-on versions the journal holds; keep those still in the pipeline.

        The limit then doubles past what is left, so frames stuck in the pipeline cannot make
        this run on every hand-on; it comes back down once they are done.
        """
        for path, version in list(self._handed.items()):
            try:
                done = self._is_done(self._key(path, version))
            except Exception as exc:  # the journal answers again at the next hand-on
                logger.warning("cannot ask the journal about %s (%s)", path, exc)
                return
            if done:
                del self._handed[path]
        self._handed_limit = max(HANDED_LIMIT, 2 * len(self._handed))

    def _forget(self, path: str) -> None:
        self._ready.pop(path, None)
        self._settling.pop(path, None)
        self._resolve_backlog(path)

    def _resolve_backlog(self, path: str | None = None) -> None:
        if self._backlog_done.is_set():
            return
        if path is not None:
            self._backlog_left.discard(path)
        if not self._backlog_left:
            self._backlog_done.set()
            logger.debug("backlog of %s handed on", self._root)


class _Feeder(StoppableThread):
    def __init__(self, source: FolderSource) -> None:
        super().__init__(name="fs-feeder")
        self._source = source

    def run(self) -> None:
        self._source._feed(self)

    def on_stop(self) -> None:
        self._source._wake()


class _EventHandler(FileSystemEventHandler):
    """Runs on the watchdog thread: notes the change and returns at once."""

    def __init__(self, source: FolderSource) -> None:
        self._source = source

    def on_closed(self, event: FileClosedEvent) -> None:
        self._source._note(os.fsdecode(event.src_path), time.monotonic())

    def on_moved(self, event: FileMovedEvent) -> None:  # type: ignore[override]
        if not event.is_directory:  # a folder's files arrive as their own moved events
            self._source._note(os.fsdecode(event.src_path), _Change.GONE)
            self._source._note(os.fsdecode(event.dest_path), time.monotonic())

    def on_created(self, event: FileCreatedEvent) -> None:  # type: ignore[override]
        if not event.is_directory:
            self._source._note(os.fsdecode(event.src_path), _Change.WRITTEN)

    def on_modified(self, event: FileModifiedEvent) -> None:  # type: ignore[override]
        if not event.is_directory:
            self._source._note(os.fsdecode(event.src_path), _Change.WRITTEN)

    def on_deleted(self, event: FileDeletedEvent) -> None:  # type: ignore[override]
        if not event.is_directory:
            self._source._note(os.fsdecode(event.src_path), _Change.GONE)


def is_frame_file(relative: str, config: InputConfig) -> bool:
    """Whether the file at `relative` (to the input folder) is a frame: it matches
    input.patterns, is not hidden or temporary, and lies in a subfolder only when recursive."""
    parts = relative.split(os.sep)
    if parts[0] == os.pardir or (len(parts) > 1 and not config.recursive):
        return False
    if any(part.startswith(".") for part in parts):
        return False
    name = parts[-1].lower()
    if name.endswith(TEMPORARY_SUFFIXES):
        return False
    return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in config.patterns)


def frame_files(root: str, config: InputConfig) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of every frame file under `root` now, as the backlog scan sees them."""
    for folder, dirs, files in os.walk(root, onerror=_log_walk_error):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if config.recursive else []
        for name in files:
            path = os.path.join(folder, name)
            if is_frame_file(os.path.relpath(path, root), config):
                try:
                    yield path, os.stat(path)
                except OSError:
                    continue


def source_name(relative: str) -> str:
    """The file's name in the journal and the store: its relative path with forward slashes.

    A name that is not valid UTF-8 (written by another OS, say) keeps its odd bytes as
    backslash escapes, so every table can hold it; the file itself is read by its real path.
    """
    text = os.fsencode(relative).decode("utf-8", "backslashreplace")
    return Path(text).as_posix()


def _log_walk_error(exc: OSError) -> None:
    logger.warning("cannot list %s (%s); its files are not in the backlog", exc.filename, exc)
