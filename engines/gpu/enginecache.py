"""Built TensorRT engines, cached on disk and keyed by everything that makes a plan valid.

A plan is only valid for the model it was built from, the TensorRT version and the GPU (name and
compute capability) that built it, its precision and its optimisation profile (batch range and
frame shape). Each plan sits in one slot per model name, part, precision and profile
(`<slot>.plan`), with a JSON file beside it (`<slot>.json`) holding the full key and the plan's
SHA-256. Looking a plan up compares the whole key: a mismatch (a retrained model, a new driver
stack, another GPU) rebuilds with one log line saying what changed; a plan whose bytes do not
match its hash, or that TensorRT refuses to load, is rebuilt rather than fatal.

Pure Python: nothing here imports TensorRT, so the logic is tested on a CPU with a fake builder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from engines.files import write_bytes_atomically, write_text_atomically
from engines.gpu.preprocess import PREPROCESS_VERSION
from engines.runtime.base import PRECISIONS

logger = logging.getLogger(__name__)

T = TypeVar("T")
PARTS = ("detector", "segmenter")


class PlanError(RuntimeError):
    """A cached plan exists but cannot be used (corrupt, truncated, refused by TensorRT)."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "artifactd" / "engines"


def parse_frame_size(text: str) -> tuple[int, int]:
    """"1080x1080" -> (1080, 1080) as (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise ValueError(f"frame size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 2048x2048")
    return int(match[1]), int(match[2])


@dataclass(frozen=True, slots=True)
class Profile:
    """One TensorRT optimisation profile: a batch range and one frame shape.

    Frame shapes are fixed per engine (min = opt = max) because TensorRT picks its fastest
    kernels for one shape; another frame size gets its own engine.
    """

    min_batch: int
    opt_batch: int
    max_batch: int
    height: int
    width: int
    channels: int = 1

    def input_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of the plan's input: uint8 bytes [N, C, H, 2W]."""
        c, h, w2 = self.channels, self.height, 2 * self.width
        return (self.min_batch, c, h, w2), (self.opt_batch, c, h, w2), (self.max_batch, c, h, w2)

    @property
    def tag(self) -> str:
        return (f"b{self.min_batch}-{self.opt_batch}-{self.max_batch}_"
                f"c{self.channels}_{self.height}x{self.width}")


def make_profile(max_batch: int, frame_shape: tuple[int, int], *, channels: int = 1,
                 opt_batch: int | None = None, min_batch: int = 1) -> Profile:
    """Check and build a profile; opt defaults to max (a busy screen fills its batches)."""
    opt = max_batch if opt_batch is None else opt_batch
    if min_batch < 1 or not (min_batch <= opt <= max_batch):
        raise ValueError(f"batch sizes must satisfy 1 <= min ({min_batch}) <= opt ({opt}) "
                         f"<= max ({max_batch})")
    height, width = frame_shape
    if height < 1 or width < 1:
        raise ValueError(f"frame shape {frame_shape}: expected positive height and width")
    if channels < 1:
        raise ValueError(f"channels {channels}: expected at least 1")
    return Profile(min_batch, opt, max_batch, int(height), int(width), channels)


@dataclass(frozen=True, slots=True)
class BuildTarget:
    """What the plan is built with and for: it is only valid there."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"


@dataclass(frozen=True, slots=True)
class EngineKey:
    model_name: str
    model_hash: str
    part: str  # "detector" | "segmenter"
    precision: str
    profile: Profile
    target: BuildTarget
    preprocess_version: int = PREPROCESS_VERSION

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"engine part {self.part!r}: expected one of {PARTS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {PRECISIONS}")

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def slot(self) -> str:
        """File stem: one per model name, part, precision and profile (GPU/TensorRT/model hash
        changes replace the plan in its slot instead of piling up stale ones)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.model_name)
        return f"{safe}-{self.part}-{self.precision}-{self.profile.tag}"


def key_differences(wanted: dict, found: dict, prefix: str = "") -> list[str]:
    """Human-readable list of the fields that differ between two key dicts."""
    changes = []
    for name in sorted(set(wanted) | set(found)):
        a, b = wanted.get(name), found.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += key_differences(a, b, f"{prefix}{name}.")
        elif a != b:
            changes.append(f"{prefix}{name} {b!r} -> {a!r}")
    return changes


@dataclass(slots=True)
class EngineCache:
    folder: Path = field(default_factory=default_cache_dir)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).expanduser()

    def plan_path(self, key: EngineKey) -> Path:
        return self.folder / f"{key.slot}.plan"

    def meta_path(self, key: EngineKey) -> Path:
        return self.folder / f"{key.slot}.json"

    def lookup(self, key: EngineKey) -> Path | None:
        """The cached plan for exactly this key, or None (saying why when one was there)."""
        plan, meta = self.plan_path(key), self.meta_path(key)
        if not plan.is_file() and not meta.is_file():
            return None
        try:
            recorded = json.loads(meta.read_text())
            found_key = recorded["key"]
            sha = recorded["plan_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("engine %s: metadata %s is missing or unreadable; rebuilding",
                           key.slot, meta)
            return None
        if found_key != key.to_dict():
            logger.info("engine %s was built for another configuration (%s); rebuilding",
                        key.slot, "; ".join(key_differences(key.to_dict(), found_key)))
            return None
        try:
            data = plan.read_bytes()
        except OSError as exc:
            logger.warning("engine %s: cannot read %s (%s); rebuilding", key.slot, plan, exc)
            return None
        if hashlib.sha256(data).hexdigest() != sha:
            logger.warning("engine %s: %s does not match its recorded hash (corrupt or "
                           "truncated); rebuilding", key.slot, plan)
            return None
        return plan

    def store(self, key: EngineKey, plan: bytes, extra: dict | None = None) -> Path:
        """Write the plan, then its metadata, each atomically (a reader never sees half)."""
        if not plan:
            raise PlanError(f"engine {key.slot}: the builder returned an empty plan")
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(self.plan_path(key), plan)
        meta = {"key": key.to_dict(), "plan_sha256": hashlib.sha256(plan).hexdigest(),
                "plan_bytes": len(plan), **(extra or {})}
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        write_text_atomically(self.meta_path(key), text)
        return self.plan_path(key)

    def invalidate(self, key: EngineKey) -> None:
        for path in (self.meta_path(key), self.plan_path(key)):
            path.unlink(missing_ok=True)

    def ensure(self, key: EngineKey, build: Callable[[], bytes],
               extra: Callable[[], dict] | None = None) -> Path:
        """The plan's path, building it first when no valid cached plan matches the key."""
        with self._locked(key):
            found = self.lookup(key)
            if found is not None:
                return found
            logger.info("building TensorRT engine %s (this takes a while the first time)",
                        key.slot)
            return self.store(key, build(), extra() if extra else None)

    def load(self, key: EngineKey, build: Callable[[], bytes], load: Callable[[bytes], T],
             extra: Callable[[], dict] | None = None) -> T:
        """Ensure, then load; a plan that fails to load is rebuilt once, not fatal."""
        data = self.ensure(key, build, extra).read_bytes()
        try:
            return load(data)
        except PlanError as exc:
            logger.warning("engine %s could not be loaded (%s); rebuilding it", key.slot, exc)
            self.invalidate(key)
        return load(self.ensure(key, build, extra).read_bytes())

    def entries(self) -> Iterator[dict]:
        """Metadata of every cached plan (for `artifactd engines list`)."""
        if not self.folder.is_dir():
            return
        for meta in sorted(self.folder.glob("*.json")):
            try:
                recorded = json.loads(meta.read_text())
            except (OSError, ValueError):
                recorded = {"error": "unreadable metadata"}
            recorded["slot"] = meta.stem
            yield recorded

    @contextlib.contextmanager
    def _locked(self, key: EngineKey) -> Iterator[None]:
        """One builder per slot across processes (two services starting at once)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock_path = self.folder / f".{key.slot}.lock"
        with open(lock_path, "a+b") as handle:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - not Linux: no cross-process lock
                yield
                return
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
