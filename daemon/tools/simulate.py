"""`artifactd simulate`: a fake instrument that writes a plate of synthetic frames into a folder.

It writes the way real acquisition software does, so the folder source is tested against the
same events: open the final name, write the TIFF in chunks with small pauses, close (default),
or with --rename write `<name>.part` and rename it into place. Wells go in plate order (A01,
A02, ...), fields within a well, one file per field and channel, at --rate files per second.
Frames come from engines.data.synth; contaminated wells get artifacts in most fields. The pixel size
goes into the TIFF (ImageJ resolution tags), where the decoder reads it back.

--smudge draws dirt on the optics: a dark, soft-edged smudge at the same place of every field
(the light through it dimmed to exp(-SMUDGE_ABSORBANCE), about a third, at its centre), as dust
on the camera window or a smear on a lens shows in every image whatever the sample. Darker
smudges hide more of the sample's artifacts from the shipped model; this one it finds in ~9 of
10 fields of 256 x 256 and in every field of 1080 x 1080. It is not in the
sample, so the truth CSV's label and n_artifacts leave it out; its `smudge` column says it is there.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from daemon.decode.names import well_name
from engines.data.synth import SynthFrame, SynthOptions, frame_for
from engines.files import replace_atomically

logger = logging.getLogger(__name__)

PLATES = {96: (8, 12), 384: (16, 24)}  # wells -> (rows, columns)
NAMINGS = ("operetta", "imagexpress")
TRUTH_COLUMNS = ("source", "plate", "well", "field", "channel", "label", "n_artifacts", "smudge")
# The smudge: centre (y, x) and radius as fractions of the field's height, width and smaller side.
DEFAULT_SMUDGE = (0.3, 0.65, 0.07)
SMUDGE_ABSORBANCE = 1.0  # at its centre
SMUDGE_EDGE = 0.2  # width of its soft edge, relative to its radius (it is out of focus)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulateOptions:
    rate: float = 2.0  # files per second; 0 = as fast as frames can be made
    plate: int = 96
    fields: int = 4
    channels: int = 1
    size: int = 1080
    seed: int = 0
    rename: bool = False  # write <name>.part, then rename into place
    chunk_bytes: int = 256 * 1024
    naming: str = "operetta"
    plate_name: str = "SimPlate"
    contaminated_wells: tuple[str, ...] = ()
    artifact_probability: float = 0.1
    contaminated_probability: float = 0.9
    pixel_size_um: float | None = None  # None: engines.data.synth draws one per frame
    limit: int = 0  # stop after this many files; 0 = the whole plate
    truth: Path | None = None  # CSV of what was drawn, written at the end
    workers: int = 2  # threads rendering frames ahead of the writer
    smudge: tuple[float, float, float] | None = None  # dirt on the optics (DEFAULT_SMUDGE)

    def __post_init__(self) -> None:
        if self.plate not in PLATES:
            raise ValueError(f"--plate: expected one of {sorted(PLATES)}, got {self.plate}")
        if self.naming not in NAMINGS:
            raise ValueError(f"--naming: expected one of {', '.join(NAMINGS)}, got {self.naming!r}")
        for name in ("fields", "channels", "size", "chunk_bytes", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected a number >= 1")
        if self.rate < 0 or self.limit < 0:
            raise ValueError("--rate and --limit: expected numbers >= 0")
        for name in ("artifact_probability", "contaminated_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')}: expected a probability in [0, 1]")
        if self.smudge is not None:
            y, x, radius = self.smudge
            if not (0 <= y <= 1 and 0 <= x <= 1 and 0 < radius <= 0.5):
                raise ValueError(f"--smudge: expected Y,X,RADIUS as fractions of the field (Y and "
                                 f"X in [0, 1], RADIUS in (0, 0.5]), got {y:g},{x:g},{radius:g}")
        unknown = sorted(set(self.contaminated_wells) - set(plate_wells(self.plate)))
        if unknown:
            raise ValueError(f"--contaminated-wells: {', '.join(unknown)} not on a "
                             f"{self.plate}-well plate; expected wells like C07")


@dataclass(frozen=True, slots=True)
class _Field:
    index: int  # frame index in the synthetic dataset (one per well and field)
    well: str
    row: int
    column: int
    field: int


def plate_wells(plate: int) -> list[str]:
    rows, columns = PLATES[plate]
    return [well_name(str(r), str(c)) for r in range(1, rows + 1) for c in range(1, columns + 1)]


def file_name(options: SimulateOptions, shot: _Field, channel: int) -> str:
    """The path (relative to --out) the instrument would give this field and channel."""
    if options.naming == "operetta":
        return (f"{options.plate_name}/r{shot.row:02d}c{shot.column:02d}f{shot.field:02d}"
                f"p01-ch{channel}sk1fk1fl1.tiff")
    return f"{options.plate_name}_{shot.well}_s{shot.field}_w{channel}.tif"


def simulate_plate(
    out: Path, options: SimulateOptions, stop: threading.Event | None = None
) -> list[Path]:
    """Write the plate into `out`; returns the files written (fewer if `stop` was set)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    period = 1.0 / options.rate if options.rate > 0 else 0.0
    written: list[Path] = []
    truth: list[tuple[object, ...]] = []
    started = time.monotonic()
    logger.info("simulating a %d-well plate into %s at %s files/s", options.plate, out,
                options.rate or "max")
    pool = ThreadPoolExecutor(options.workers, thread_name_prefix="simulate")
    try:
        for shot, channel, image, frame in _shots(pool, options):
            if stop.wait(max(0.0, started + len(written) * period - time.monotonic())):
                break
            name = file_name(options, shot, channel)
            _write_like_an_instrument(out / name, _tiff_bytes(image, frame.pixel_size_um),
                                      options, period)
            written.append(out / name)
            truth.append((name, options.plate_name, shot.well, shot.field, channel,
                          frame.label, len(frame.objects), options.smudge is not None))
            logger.debug("wrote %s (%s)", name, frame.label)
            if len(written) == options.limit:
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if options.truth is not None:
            _write_truth(options.truth, truth)
        logger.info("wrote %d file(s) in %.1f s", len(written), time.monotonic() - started)
    return written


def _shots(
    pool: ThreadPoolExecutor, options: SimulateOptions
) -> Iterator[tuple[_Field, int, np.ndarray, SynthFrame]]:
    """(field, channel, image, frame) in plate order, rendered a few fields ahead."""
    synth = {
        dirty: SynthOptions(
            height=options.size, width=options.size, dtype="uint16",
            artifact_probability=(
                options.contaminated_probability if dirty else options.artifact_probability),
            pixel_size_um=options.pixel_size_um, channels=options.channels,
        )
        for dirty in (False, True)
    }
    contaminated = set(options.contaminated_wells)
    smudge = _Smudge(options.smudge) if options.smudge is not None else None
    pending: deque[tuple[_Field, Future[SynthFrame]]] = deque()
    fields = _fields(options)
    while True:
        for shot in fields:
            pending.append((shot, pool.submit(
                frame_for, options.seed, shot.index, synth[shot.well in contaminated])))
            if len(pending) > 2 * options.workers:
                break
        if not pending:
            return
        shot, future = pending.popleft()
        frame = future.result()
        images = frame.image if frame.image.ndim == 3 else [frame.image] * options.channels
        for channel, image in enumerate(images, start=1):
            yield shot, channel, image if smudge is None else smudge.on(image), frame


def _fields(options: SimulateOptions) -> Iterator[_Field]:
    rows, columns = PLATES[options.plate]
    index = 0
    for row in range(1, rows + 1):
        for column in range(1, columns + 1):
            for field in range(1, options.fields + 1):
                yield _Field(index, well_name(str(row), str(column)), row, column, field)
                index += 1


class _Smudge:
    """Dirt on the optics: the same dimming of the same pixels in every field."""

    def __init__(self, where: tuple[float, float, float]) -> None:
        self._where = where
        self._light: dict[tuple[int, int], np.ndarray] = {}  # transmission per frame shape

    def on(self, image: np.ndarray) -> np.ndarray:
        light = self._light.get(image.shape)
        if light is None:
            light = self._light[image.shape] = self._transmission(image.shape)
        dimmed = np.rint(image * light)
        return np.clip(dimmed, 0, np.iinfo(image.dtype).max).astype(image.dtype)

    def _transmission(self, shape: tuple[int, int]) -> np.ndarray:
        y, x, radius = self._where
        height, width = shape
        rows = np.arange(height, dtype=np.float32)[:, None] - np.float32(y * (height - 1))
        cols = np.arange(width, dtype=np.float32)[None, :] - np.float32(x * (width - 1))
        r = np.hypot(rows, cols) / np.float32(radius * min(height, width))
        disc = np.clip((1 - r) / np.float32(SMUDGE_EDGE) + 0.5, 0, 1)
        disc = disc * disc * (3 - 2 * disc)  # smoothstep: an out-of-focus edge
        return np.exp(-np.float32(SMUDGE_ABSORBANCE) * disc)


def smudge_argument(text: str) -> tuple[float, float, float]:
    """--smudge Y,X,RADIUS (fractions of the field) -> a tuple; argparse reports the error."""
    try:
        y, x, radius = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected Y,X,RADIUS as three numbers, e.g. 0.3,0.65,0.07; got {text!r}") from None
    return y, x, radius


def _tiff_bytes(image: np.ndarray, pixel_size_um: float) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, imagej=True, resolution=(1 / pixel_size_um,) * 2,
                     metadata={"unit": "um"})
    return buffer.getvalue()


def _write_like_an_instrument(
    path: Path, data: bytes, options: SimulateOptions, period: float
) -> None:
    """Open, write in chunks with pauses (about half the frame period in all), close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(path.name + ".part") if options.rename else path
    chunks = range(0, len(data), options.chunk_bytes)
    pause = min(0.05, period / 2 / len(chunks))
    try:
        with open(target, "wb") as fh:
            for start in chunks:
                fh.write(data[start : start + options.chunk_bytes])
                fh.flush()
                if pause:
                    time.sleep(pause)
        if options.rename:
            os.replace(target, path)
    finally:
        if options.rename:
            target.unlink(missing_ok=True)


def _write_truth(path: Path, rows: list[tuple[object, ...]]) -> None:
    """Through a dot-named temporary file (ignored by the folder source) and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(TRUTH_COLUMNS)
            writer.writerows(rows)

    replace_atomically(path, write)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimulateOptions()
    parser.add_argument("--out", type=Path, required=True, help="folder to write frames into")
    parser.add_argument("--rate", type=float, default=defaults.rate,
                        help="files per second (0 = as fast as possible)")
    parser.add_argument("--plate", type=int, choices=sorted(PLATES), default=defaults.plate,
                        help="wells on the plate")
    parser.add_argument("--fields", type=int, default=defaults.fields, help="fields per well")
    parser.add_argument("--channels", type=int, default=defaults.channels,
                        help="channels per field, one file each")
    parser.add_argument("--size", type=int, default=defaults.size, help="frame height and width")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="one seed, one plate: the same frames every run")
    parser.add_argument("--rename", action="store_true",
                        help="write NAME.part and rename it into place (default: write in place)")
    parser.add_argument("--chunk-bytes", type=int, default=defaults.chunk_bytes,
                        help="bytes per write call")
    parser.add_argument("--naming", choices=NAMINGS, default=defaults.naming,
                        help="file names as this instrument writes them")
    parser.add_argument("--plate-name", default=defaults.plate_name,
                        help="plate folder (operetta) or name prefix (imagexpress)")
    parser.add_argument("--contaminated-wells", default="",
                        help="comma-separated wells with artifacts in most fields, e.g. C07,D05")
    parser.add_argument("--artifact-probability", type=float,
                        default=defaults.artifact_probability,
                        help="chance that a field of a clean well still holds an artifact")
    parser.add_argument("--pixel-size", type=float, default=None,
                        help="µm per pixel (default: drawn per frame by engines.data.synth)")
    parser.add_argument("--limit", type=int, default=0, help="stop after N files (0 = no limit)")
    parser.add_argument("--smudge", type=smudge_argument, nargs="?", default=None,
                        const=DEFAULT_SMUDGE, metavar="Y,X,RADIUS",
                        help="dirt on the optics: a dark smudge at the same place of every field, "
                        "centred at Y,X with RADIUS, fractions of the field (default "
                        f"{','.join(f'{v:g}' for v in DEFAULT_SMUDGE)})")
    parser.add_argument("--truth", type=Path, default=None,
                        help="write what was drawn (label per file) to this CSV at the end")


def main(args: argparse.Namespace) -> int:
    try:
        options = SimulateOptions(
            rate=args.rate, plate=args.plate, fields=args.fields, channels=args.channels,
            size=args.size, seed=args.seed, rename=args.rename, chunk_bytes=args.chunk_bytes,
            naming=args.naming, plate_name=args.plate_name,
            contaminated_wells=tuple(
                well.strip().upper() for well in args.contaminated_wells.split(",") if well.strip()
            ),
            artifact_probability=args.artifact_probability, pixel_size_um=args.pixel_size,
            limit=args.limit, truth=args.truth, smudge=args.smudge,
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT,
                                                                          signal.SIGTERM)}
    try:
        simulate_plate(args.out, options, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
