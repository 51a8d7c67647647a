"""What runs on the Dask workers: the model, loaded once per worker, and the task itself.

`ModelOnWorker` is a worker plugin: registered once by the driver, it is set up on every worker
(also on workers that join later) and keeps the model's engines between tasks. On a CPU worker
it holds one single-threaded engine per worker thread (the service's rule: frames side by side
on separate cores beat one frame split over them); on a GPU worker one engine, shared by the
worker's threads (run one worker per GPU, as dask-cuda does). Engines are opened on a task's
first use, in the task's thread, so a slow load never blocks the worker's event loop (its
heartbeats), and closed when the plugin is removed at the end of the run.

`analyse_task` decodes a task's files (daemon.decode.tiff), runs them through the models in
batches and measures them (daemon.pipeline.analysis), exactly as the service does. It writes
nothing: its rows and masks (zstd-compressed) go back to the driver, which alone writes the store.

A file that cannot be decoded is a failure row of its own (the task goes on). A task whose
model, inference or post-processing raises is raised again as TaskFailed: Dask runs it again
(`reprocess.retries`), on whatever worker is free, and the driver records it after the last try.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np
from distributed import WorkerPlugin, get_worker

from daemon.config import Config
from daemon.decode.tiff import DecodeOptions, FrameError, read_frame
from daemon.frames import Frame, FrameFailure, FrameKey, FrameMeta, FrameResult, ReadyFile
from daemon.pipeline.analysis import Analysis, Scored
from daemon.tools.reprocess.plan import Task
from engines.runtime.base import Engine
from engines.runtime.modelcard import ModelBundle, load_model
from engines.select import choose_backend, create_engine

logger = logging.getLogger(__name__)

PLUGIN = "artifactd-model"
EVENTS = "artifactd-reprocess"  # scheduler event topic: one event per task attempt that raised
KEY_PREFIX = "artifactd-reprocess-"  # of the tasks' keys: artifactd-reprocess-<run>-<task id>
_ZSTD = numcodecs.Zstd(level=1)  # masks are mostly background: ~100 bytes for an empty one


class TaskFailed(Exception):
    """A task that could not finish; `reason` is the failure table's reason for its frames."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class FrameRow:
    """One analysed frame as it travels to the driver: rows and a compressed mask, no pixels."""

    meta: FrameMeta
    key: FrameKey
    shape: tuple[int, int]
    score: float
    flagged: bool
    area_fraction: float
    n_artifacts: int
    processed_at: str
    unfamiliarity: float
    artifacts: dict[str, np.ndarray]
    mask: bytes | None  # zstd of the label image; None when it is all background
    mask_dtype: str

    @classmethod
    def of(cls, result: FrameResult) -> FrameRow:
        labels = np.ascontiguousarray(result.labels)
        mask = bytes(_ZSTD.encode(labels)) if labels.any() else None
        key: FrameKey = result.frame.key  # type: ignore[assignment]  # files always have one
        return cls(result.frame.meta, key, labels.shape, result.score,  # type: ignore[arg-type]
                   result.flagged, result.area_fraction, result.n_artifacts,
                   result.processed_at, result.unfamiliarity, result.artifacts, mask,
                   labels.dtype.str)

    def result(self) -> FrameResult:
        """The FrameResult the store takes (the frame's pixels are not needed there)."""
        if self.mask is None:
            labels = np.zeros(self.shape, dtype=np.uint16)
        else:
            raw = _ZSTD.decode(self.mask)
            labels = np.frombuffer(raw, dtype=self.mask_dtype).reshape(self.shape)
        # A stand-in of the frame's shape that takes no memory: the store reads only its shape.
        pixels = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint16), self.shape, (0, 0))
        frame = Frame(self.meta, pixels, time.monotonic(), self.key, frame_id=self.key.source)
        return FrameResult(frame, self.score, self.flagged, labels, self.artifacts,
                           self.area_fraction, self.n_artifacts, self.processed_at,
                           self.unfamiliarity)


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    task: int
    rows: list[FrameRow]
    failures: list[FrameFailure]
    worker: str
    thread: int
    started: float  # time.time() on the worker: gaps between one thread's tasks are overhead
    finished: float
    engines_opened: int  # by this worker's plugin so far (the model loads once per engine)


class ModelOnWorker(WorkerPlugin):
    """The model on one worker: loaded on first use, kept until the plugin is removed."""

    name = PLUGIN

    def __init__(self, config: Config, model: str) -> None:
        self.config = config
        self.model = model

    def setup(self, worker) -> None:
        self.worker = worker
        # Kept for the worker's life (a task cancelled at the end may fail after teardown).
        quieted = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _QuietTaskFailed) for f in quieted.filters):
            quieted.addFilter(_QuietTaskFailed())
        self._ready = threading.Condition()
        self._bundle: ModelBundle | None = None
        self._analysis: Analysis | None = None
        self._decode: DecodeOptions | None = None
        self._idle: list[Engine] = []
        self._opened = 0
        self._limit = 0  # engines this worker may hold: one per thread on a CPU, one per GPU
        self._choice = None  # the backend, chosen once

    def teardown(self, worker) -> None:
        with self._ready:
            engines, self._idle = self._idle, []
        for engine in engines:
            with contextlib.suppress(Exception):
                engine.close()

    @property
    def engines_opened(self) -> int:
        return self._opened

    def parts(self) -> tuple[Analysis, DecodeOptions]:
        """How frames are decoded and judged (the model card's thresholds, the config's)."""
        self._load_bundle()
        return self._analysis, self._decode  # type: ignore[return-value]

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        """An engine for this thread's task, returned to the worker's pool afterwards."""
        engine = self._take()
        try:
            yield engine
        finally:
            with self._ready:
                self._idle.append(engine)
                self._ready.notify()

    def _load_bundle(self) -> None:
        """The model card and the backend, once: how many engines this worker may hold is
        known before the first one opens."""
        with self._ready:
            if self._bundle is not None:
                return
            model = self.config.model
            try:
                bundle = load_model(self.model)
                self._choice = choose_backend(model.backend, model.precision)
            except Exception as exc:
                raise TaskFailed("model", f"model {self.model} cannot be loaded on worker "
                                 f"{self.worker.address} ({exc}); expected the same model "
                                 "folder on every worker") from None
            self._limit = self.worker.state.nthreads if self._choice.device == "cpu" else 1
            self._analysis = Analysis.for_model(self.config, bundle)
            self._decode = DecodeOptions.from_config(self.config.input, self.config.metadata,
                                                     in_channels=bundle.card.in_channels)
            self._bundle = bundle

    def _take(self) -> Engine:
        self._load_bundle()
        with self._ready:
            while not self._idle and self._opened >= self._limit:
                self._ready.wait()
            if self._idle:
                return self._idle.pop()
            self._opened += 1  # reserved: another thread waits rather than open one more
        try:
            return self._open()
        except BaseException:
            with self._ready:
                self._opened -= 1
                self._ready.notify()
            raise

    def _open(self) -> Engine:
        model, bundle, choice = self.config.model, self._bundle, self._choice
        assert bundle is not None and choice is not None  # _load_bundle ran
        try:
            engine = create_engine(
                bundle, backend=choice.backend, precision=model.precision,
                threads=model.threads or 1, max_batch=self.config.pipeline.max_batch,
                engine_cache=Path(model.engine_cache) if model.engine_cache else None)
        except Exception as exc:
            raise TaskFailed("model", f"model {self.model} cannot be opened on worker "
                             f"{self.worker.address} ({type(exc).__name__}: {exc})") from None
        logger.info("worker %s: engine %d of model %s opened (%s)", self.worker.address,
                    self._opened, engine.info.model, engine.info.backend)
        return engine


class _QuietTaskFailed(logging.Filter):
    """Drops the worker's "Compute Failed" traceback for a TaskFailed of ours: the driver
    reports it in one sentence per frame (and Dask retries it). Other errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        ours = (str(record.msg).startswith("Compute Failed") and len(args) > 3
                and str(args[0]).startswith(KEY_PREFIX) and str(args[3]).startswith("TaskFailed("))
        return not ours


def analyse_task(task: Task, run: str) -> TaskOutcome:
    """Decode, infer and measure a task's frames; the outcome goes back to the driver."""
    worker = get_worker()
    model: ModelOnWorker = worker.plugins[PLUGIN]
    started = time.time()
    try:
        rows, failures = _analyse(model, task)
    except Exception as exc:
        reason = exc.reason if isinstance(exc, TaskFailed) else "task"
        worker.log_event(EVENTS, {"run": run, "task": task.id, "reason": reason,
                                  "message": str(exc), "worker": worker.address})
        raise
    return TaskOutcome(task.id, rows, failures, worker.address, threading.get_ident(), started,
                       time.time(), model.engines_opened)


def _analyse(model: ModelOnWorker, task: Task) -> tuple[list[FrameRow], list[FrameFailure]]:
    analysis, options = model.parts()
    frames, failures = _decode(task, options)
    scored: list[Scored] = []
    if frames:
        with model.engine() as engine:
            for batch in _batches(frames, model.config.pipeline.max_batch):
                try:
                    scored += analysis.infer(engine, batch)
                except Exception as exc:
                    raise TaskFailed("inference", f"inference failed on worker "
                                     f"{model.worker.address} ({type(exc).__name__}: {exc})"
                                     ) from exc
    rows = []
    for item in scored:
        try:
            rows.append(FrameRow.of(analysis.measure(item)))
        except Exception as exc:
            raise TaskFailed("postprocess", f"{item.frame.meta.source}: post-processing failed "
                             f"({type(exc).__name__}: {exc})") from exc
    return rows, failures


def _decode(task: Task, options: DecodeOptions) -> tuple[list[Frame], list[FrameFailure]]:
    """Each file as the service reads it; one that cannot be read is a failure of its own."""
    frames: list[Frame] = []
    failures: list[FrameFailure] = []
    for planned in task.files:
        ready = ReadyFile(Path(planned.path), planned.key, time.monotonic())
        try:
            frames.append(read_frame(ready, options))
        except FrameError as exc:
            failures.append(FrameFailure(planned.source, exc.reason, str(exc), planned.key))
        except Exception as exc:  # a decoder bug fails that file, not the task
            logger.exception("unexpected error decoding %s", planned.path)
            failures.append(FrameFailure(planned.source, "decode", f"{planned.path}: {exc}",
                                         planned.key))
    return frames, failures


def _batches(frames: list[Frame], size: int) -> Iterator[list[Frame]]:
    """Batches of at most `size` frames of one shape, in task order within each shape."""
    by_shape: dict[tuple[int, ...], list[Frame]] = {}
    for frame in frames:
        by_shape.setdefault(frame.pixels.shape, []).append(frame)
    for same in by_shape.values():
        for i in range(0, len(same), size):
            yield same[i:i + size]

