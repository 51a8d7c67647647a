"""Service configuration: TOML -> frozen dataclasses, checked key by key at start-up.

Unknown keys and values of the wrong type or range stop start-up with one sentence that names
the key (`section.key`) and what was expected.

Over 400 lines on purpose: one dataclass per section of config.toml, each key with its type,
default and check side by side, so the whole of the configuration reads in one file.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engines.runtime.base import PRECISIONS
from engines.runtime.modelcard import SEGMENT_MODES
from engines.runtime.plate_baseline import PlateBaselineOptions


class ConfigError(ValueError):
    """Raised with a message naming the offending key and what was expected."""


@dataclass(frozen=True, slots=True)
class InputConfig:
    folder: str = "frames"
    patterns: tuple[str, ...] = ("*.tif", "*.tiff", "*.ome.tif", "*.ome.tiff")
    recursive: bool = True
    polling: bool = False  # network shares do not deliver inotify events
    poll_interval_s: float = 1.0
    settle_s: float = 2.0  # unchanged size/mtime for this long counts as complete
    max_pixels: int = 64_000_000
    channel: int = 0  # which channel of a multi-channel file is analysed
    plane: int = 0  # which z-plane of a z-stack is analysed
    rgb: str = "refuse"  # "refuse" | "luminance"

    def check(self) -> None:
        _positive("input.poll_interval_s", self.poll_interval_s)
        _positive("input.settle_s", self.settle_s, allow_zero=True)
        _positive("input.max_pixels", self.max_pixels)
        _choice("input.rgb", self.rgb, ("refuse", "luminance"))
        if self.channel < 0 or self.plane < 0:
            raise ConfigError("input.channel and input.plane: expected an index >= 0")
        if not self.patterns:
            raise ConfigError("input.patterns: expected at least one file pattern")


@dataclass(frozen=True, slots=True)
class MetadataConfig:
    # "auto" | "operetta" | "imagexpress" | "cellvoyager" | "cq1" | "generic" | "regex" | "none"
    preset: str = "auto"
    regex: str = ""  # named groups: plate, well, row, column, field, channel, plane
    pixel_size_um: float = 0.0  # used when the file does not say; 0 = unknown

    def check(self) -> None:
        _choice("metadata.preset", self.preset, ("auto", "operetta", "imagexpress", "cellvoyager",
                                                 "cq1", "generic", "regex", "none"))
        if self.preset == "regex" and not self.regex:
            raise ConfigError("metadata.regex: expected a regular expression when preset = 'regex'")
        _positive("metadata.pixel_size_um", self.pixel_size_um, allow_zero=True)


@dataclass(frozen=True, slots=True)
class OutputConfig:
    store: str = "results.zarr"
    journal: str = ""  # default: <store>.journal.sqlite beside the store

    def journal_path(self) -> Path:
        return Path(self.journal) if self.journal else Path(str(self.store) + ".journal.sqlite")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    path: str = "default"  # a model folder, or "default" for the shipped model
    backend: str = "auto"  # "auto" | "onnxruntime" | "torch" | "tensorrt"
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16" | "int8"
    threads: int = 0  # CPU threads per inference engine; 0 = cores / pipeline.engine_workers
    segment: str = "model"  # "model" (as its card says) | "flagged" | "all"
    engine_cache: str = ""  # folder for built TensorRT engines; default ~/.cache/artifactd
    detect_threshold: float = 0.0  # 0: the model card's; else flag frames scoring at least this
    # The plate-relative verdict (engines.runtime.plate_baseline): after plate_min_fields
    # fields, the detector flags a field only if it scores plate_margin logits above the
    # plate's lower quartile.
    plate_relative: bool = True
    plate_margin: float = 2.0
    plate_min_fields: int = 8

    def check(self) -> None:
        _choice("model.backend", self.backend, ("auto", "onnxruntime", "torch", "tensorrt"))
        _choice("model.precision", self.precision, PRECISIONS)
        _choice("model.segment", self.segment, ("model", *SEGMENT_MODES))
        _positive("model.threads", self.threads, allow_zero=True)
        if not 0 <= self.detect_threshold < 1:
            raise ConfigError(f"model.detect_threshold: expected 0 (the model card's) or a "
                              f"probability below 1, got {self.detect_threshold!r}")
        if not 0 <= self.plate_margin <= 20:
            raise ConfigError(f"model.plate_margin: expected logits between 0 and 20, got "
                              f"{self.plate_margin!r}")
        _positive("model.plate_min_fields", self.plate_min_fields)

    @property
    def plate_baseline(self) -> PlateBaselineOptions:
        return PlateBaselineOptions(enabled=self.plate_relative, margin=self.plate_margin,
                                    min_fields=self.plate_min_fields)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    decode_workers: int = 2
    postprocess_workers: int = 2
    queue_size: int = 16  # frames per stage queue; a full queue makes the stage before wait
    max_batch: int = 4
    max_wait_ms: float = 20.0
    # Engines running batches side by side; 0 = one per core on the CPU, one on a GPU.
    engine_workers: int = 0
    # A passing fault (file not readable yet, an inference or post-processing error) is tried
    # again this many times, waiting retry_delay_s, then twice as long each time.
    retries: int = 3
    retry_delay_s: float = 1.0

    def check(self) -> None:
        for name in ("decode_workers", "postprocess_workers", "queue_size", "max_batch"):
            _positive(f"pipeline.{name}", getattr(self, name))
        _positive("pipeline.retries", self.retries, allow_zero=True)
        _positive("pipeline.retry_delay_s", self.retry_delay_s, allow_zero=True)
        _positive("pipeline.max_wait_ms", self.max_wait_ms, allow_zero=True)
        _positive("pipeline.engine_workers", self.engine_workers, allow_zero=True)


@dataclass(frozen=True, slots=True)
class PostprocessConfig:
    method: str = "model"  # "model": the card's threshold | "fixed" | "adaptive"
    threshold: float = 0.5  # for method = "fixed"
    adaptive_block_px: int = 51  # local window for method = "adaptive" (odd)
    min_area_um2: float = 0.0  # used when the pixel size is known; 0 = the model card's px
    min_area_px: int = 0  # used when the pixel size is unknown; 0 = the model card's
    fill_holes: bool = True

    def check(self) -> None:
        _choice("postprocess.method", self.method, ("model", "fixed", "adaptive"))
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("postprocess.threshold: expected a probability between 0 and 1")
        if self.adaptive_block_px < 3 or self.adaptive_block_px % 2 == 0:
            raise ConfigError("postprocess.adaptive_block_px: expected an odd number >= 3")
        _positive("postprocess.min_area_um2", self.min_area_um2, allow_zero=True)
        _positive("postprocess.min_area_px", self.min_area_px, allow_zero=True)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9750

    def check(self) -> None:
        _port("metrics.port", self.port)


@dataclass(frozen=True, slots=True)
class ZmqConfig:
    enabled: bool = False
    mode: str = "pull"  # "pull" | "sub"
    endpoint: str = "tcp://127.0.0.1:9752"
    bind: bool = True  # bind the endpoint (True) or connect to it (False)
    high_water_mark: int = 100  # messages queued in the socket before the overload policy
    overload: str = "block"  # "block": the sender waits | "drop_oldest": counted drops
    max_message_bytes: int = 256_000_000

    def check(self) -> None:
        _choice("zmq.mode", self.mode, ("pull", "sub"))
        _choice("zmq.overload", self.overload, ("block", "drop_oldest"))
        _positive("zmq.high_water_mark", self.high_water_mark)
        _positive("zmq.max_message_bytes", self.max_message_bytes)
        if not self.endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError("zmq.endpoint: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")


@dataclass(frozen=True, slots=True)
class VerdictsConfig:
    enabled: bool = False
    endpoint: str = "tcp://127.0.0.1:9751"  # PUB socket, topic "verdict" (and "alert")

    def check(self) -> None:
        if not self.endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError("verdicts.endpoint: expected tcp://HOST:PORT or ipc://PATH")


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    enabled: bool = True
    plate_window: int = 50  # last N fields of a plate
    plate_flagged_fraction: float = 0.3  # alert when this fraction of them is flagged
    well_flagged_fields: int = 3  # alert when a well has this many flagged fields
    surge_factor: float = 3.0  # alert when a field's area fraction exceeds baseline x this
    surge_min_fields: int = 20  # fields needed before the plate baseline is trusted
    webhook_url: str = ""  # Slack/Teams-compatible incoming webhook; empty = none
    webhook_timeout_s: float = 5.0
    webhook_retries: int = 5

    def check(self) -> None:
        _positive("alerts.plate_window", self.plate_window)
        if not 0.0 < self.plate_flagged_fraction <= 1.0:
            raise ConfigError("alerts.plate_flagged_fraction: expected a fraction in (0, 1]")
        _positive("alerts.well_flagged_fields", self.well_flagged_fields)
        _positive("alerts.surge_factor", self.surge_factor)
        _positive("alerts.surge_min_fields", self.surge_min_fields)
        _positive("alerts.webhook_timeout_s", self.webhook_timeout_s)
        _positive("alerts.webhook_retries", self.webhook_retries, allow_zero=True)
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("alerts.webhook_url: expected an http:// or https:// URL")


@dataclass(frozen=True, slots=True)
class OpticsConfig:
    """Dirt on the optics (daemon.sinks.optics): an artifact at the same place in the field, field
    after field, in different wells, lies on the camera, objective or light path."""

    enabled: bool = True
    fields: int = 5  # fields an artifact must be seen at the same place in
    wells: int = 2  # ... spread over at least this many wells
    overlap: float = 0.5  # intersection over union of its masks, field to field
    missed_fields: int = 2  # fields in a row without it before a place is forgotten

    def check(self) -> None:
        if self.fields < 2:
            raise ConfigError(f"optics.fields: expected a whole number >= 2 (one sighting is "
                              f"no evidence), got {self.fields!r}")
        if not 1 <= self.wells <= self.fields:
            raise ConfigError(f"optics.wells: expected a whole number from 1 to optics.fields "
                              f"({self.fields}), got {self.wells!r}")
        if not 0.0 < self.overlap <= 1.0:
            raise ConfigError(
                f"optics.overlap: expected a fraction in (0, 1], got {self.overlap!r}")
        _positive("optics.missed_fields", self.missed_fields, allow_zero=True)


@dataclass(frozen=True, slots=True)
class ThumbnailsConfig:
    enabled: bool = True
    downsample: int = 4  # each side divided by this: 4 = quarter scale

    def check(self) -> None:
        if not 1 <= self.downsample <= 64:
            raise ConfigError(f"thumbnails.downsample: expected a whole number from 1 to 64, "
                              f"got {self.downsample!r}")


PLATE_FORMATS = ("auto", "96", "384", "1536")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9_.@-]+")
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class WebConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9753
    plate_format: str = "auto"  # "auto": from the wells seen | "96" | "384" | "1536"
    # "NAME:TOKEN": who may record corrections from another machine (NAME is recorded).
    tokens: tuple[str, ...] = ()

    def check(self) -> None:
        _port("web.port", self.port)
        _choice("web.plate_format", self.plate_format, PLATE_FORMATS)
        for i, entry in enumerate(self.tokens, start=1):
            name, colon, token = entry.partition(":")
            # The entry itself is never repeated: it holds a secret.
            if not colon or not _TOKEN_NAME.fullmatch(name) or len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"web.tokens: entry {i} is not NAME:TOKEN; expected a name of letters, digits "
                    f"and ._@- then a colon and a token of at least {MIN_TOKEN_LENGTH} characters")
        names = [entry.partition(":")[0] for entry in self.tokens]
        if len(set(names)) != len(names):
            raise ConfigError("web.tokens: a name is given twice; expected one token per name")
        if self.enabled and not is_loopback(self.host) and not self.tokens:
            raise ConfigError(
                f"web.host: {self.host!r} is not a loopback address; expected web.tokens "
                "(NAME:TOKEN) to protect corrections when the page is served to other machines")

    def token_names(self) -> dict[str, str]:
        """token -> name."""
        return {entry.partition(":")[2]: entry.partition(":")[0] for entry in self.tokens}


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    drain_timeout_s: float = 60.0  # SIGTERM: finish queued frames within this, then exit
    # Frames waiting and none made durable for this long: the systemd watchdog pings stop, so
    # systemd restarts the service (with WatchdogSec= in the unit).
    stall_timeout_s: float = 120.0
    log_level: str = "INFO"

    def check(self) -> None:
        _positive("service.drain_timeout_s", self.drain_timeout_s)
        _positive("service.stall_timeout_s", self.stall_timeout_s)
        _choice("service.log_level", self.log_level, ("DEBUG", "INFO", "WARNING", "ERROR"))


_SCHEDULER = re.compile(r"local(?::(?P<workers>[1-9]\d*))?|tcp://[^\s/:]+:\d{1,5}")


@dataclass(frozen=True, slots=True)
class ReprocessConfig:
    # `artifactd reprocess`: "local" (a LocalCluster, one worker per core), "local:N" (N
    # workers) or the address of a running Dask scheduler, "tcp://HOST:PORT".
    scheduler: str = "local"
    fields_per_task: int = 0  # 0: one task per well; K: tasks of K fields each
    retries: int = 2  # a task that raises is run again this many times (Dask's retries)
    tasks_per_worker: int = 4  # tasks handed out ahead per worker thread (none waits for work)

    def check(self) -> None:
        local_workers(self.scheduler)
        _positive("reprocess.fields_per_task", self.fields_per_task, allow_zero=True)
        _positive("reprocess.retries", self.retries, allow_zero=True)
        _positive("reprocess.tasks_per_worker", self.tasks_per_worker)


def local_workers(scheduler: str) -> int | None:
    """For "local" and "local:N", the workers to start (0: one per core); None for the
    address of a running scheduler. A value that is neither stops with one sentence."""
    match = _SCHEDULER.fullmatch(scheduler)
    if match is None:
        raise ConfigError(f"reprocess.scheduler (--scheduler): expected local, local:N (N worker "
                          f"processes) or tcp://HOST:PORT of a running Dask scheduler, got "
                          f"{scheduler!r}")
    if not scheduler.startswith("local"):
        return None
    return int(match.group("workers") or 0)


@dataclass(frozen=True, slots=True)
class Config:
    input: InputConfig = field(default_factory=InputConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    zmq: ZmqConfig = field(default_factory=ZmqConfig)
    verdicts: VerdictsConfig = field(default_factory=VerdictsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    optics: OpticsConfig = field(default_factory=OpticsConfig)
    thumbnails: ThumbnailsConfig = field(default_factory=ThumbnailsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    reprocess: ReprocessConfig = field(default_factory=ReprocessConfig)

    def with_section(self, name: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (command-line overrides)."""
        section = replace(getattr(self, name), **changes)
        _check_section(section)
        return replace(self, **{name: section})


def load_config(path: str | Path | None) -> Config:
    """Read and check a TOML file; None gives the defaults."""
    if path is None:
        return Config()
    return parse_config(read_toml(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    """A config file's TOML as tables, or one sentence saying why it cannot be read."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); expected a TOML text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def parse_config(raw: dict[str, Any]) -> Config:
    sections = {f.name: f for f in fields(Config)}
    built: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in sections:
            raise ConfigError(f"[{name}]: unknown section; expected one of {sorted(sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: expected a [{name}] table")
        section_type = typing.get_type_hints(Config)[name]
        built[name] = _build_section(name, section_type, values)
    return Config(**built)


def _build_section(name: str, section_type: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(section_type)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{name}.{key}: unknown key; expected one of {sorted(hints)}")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    section = section_type(**kwargs)
    _check_section(section)
    return section


def _check_section(section: Any) -> None:
    check = getattr(section, "check", None)
    if check is not None:
        check()


def _coerce(key: str, value: Any, expected: Any) -> Any:
    origin = typing.get_origin(expected)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported type")  # no optional keys: defaults instead
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {expected}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}: expected a number {bound}, got {value!r}")


def _port(key: str, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{key}: expected a TCP port 0-65535, got {value!r}")


def config_problems(raw: dict[str, Any]) -> list[str]:
    """Every problem of a config, one sentence each, where parse_config stops at the first."""
    return [problem for name, values in raw.items() for problem in _section_problems(name, values)]


def _section_problems(name: str, values: Any) -> list[str]:
    """A section is judged again without each key found wrong (so with its default), until
    nothing more is found: each problem is named once, and keys are judged beside the
    file's other values (preset = "regex" beside the file's regex)."""
    values = dict(values) if isinstance(values, dict) else values
    problems: list[str] = []
    while True:
        try:
            parse_config({name: values})
            return problems
        except ConfigError as exc:
            problems.append(str(exc))
        wrong = _named_key(name, problems[-1], values)
        if wrong is None:
            return problems
        del values[wrong]


def _named_key(name: str, problem: str, values: Any) -> str | None:
    """The key of `values` a problem's sentence starts with ("input.settle_s: ..."), if any."""
    if not isinstance(values, dict):
        return None
    named = [key for key in values if re.match(rf"{re.escape(name)}\.{re.escape(key)}\b", problem)]
    return max(named, key=len, default=None)
