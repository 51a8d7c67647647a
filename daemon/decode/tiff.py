"""A ready file -> a Frame (pixels + metadata), or a FrameError that says why not.

Everything is decided from the TIFF header before a pixel is read: a frame that is too large, of
an unsupported type, or whose data lies past the end of the file is refused without allocating
its pixels. Only the pages of the selected channel(s) and plane are read.

Pixel types: uint8 and uint16 as stored. Other integer types (int8, int16, uint32, int32, ...)
are accepted when every value fits uint16 (a lossless conversion; cameras that write int16 or
32-bit containers for 12/16-bit data); otherwise, and for float, complex and 1-bit images, the
reason is "dtype". RGB images are refused ("dtype") unless input.rgb = "luminance".

Multi-dimensional files (ImageJ hyperstacks, OME-TIFF, plain page stacks) are read through
tifffile's series axes: C selects the channel, Z the plane (a plain page stack without
metadata counts as planes), any other axis (T, ...) its first index.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile

from daemon.config import InputConfig, MetadataConfig
from daemon.decode.names import parse_name
from daemon.frames import Frame, FrameMeta, ReadyFile
from engines.timestamps import timestamp_ns

logger = logging.getLogger(__name__)

REASONS = (
    "missing", "permission", "empty", "not_tiff", "truncated", "corrupt", "dtype",
    "too_large", "shape", "changed",
)

_TIFF_MAGIC = {b"II*\x00": ("<", False), b"MM\x00*": (">", False),
               b"II+\x00": ("<", True), b"MM\x00+": (">", True)}
_LUMINANCE = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709, as skimage.color.rgb2gray
_UM_PER_UNIT = {
    "m": 1e6, "cm": 1e4, "mm": 1e3, "um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0,
    "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "nm": 1e-3, "å": 1e-4, "pm": 1e-6,
    "inch": 25400.0, "in": 25400.0,
}
_UM_PER_RESOLUTION_UNIT = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}  # TIFF ResolutionUnit codes
# Printing resolutions (72 dpi, ...) that image tools write by default: not a calibration.
_MAX_PRINT_DPI = 1200


class FrameError(Exception):
    """A file that cannot become a Frame; `reason` is the failure counter's label."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown frame failure reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeOptions:
    max_pixels: int
    channel: int
    plane: int
    rgb: str  # "refuse" | "luminance"
    in_channels: int = 1  # > 1: channels channel .. channel+in_channels-1 as (C, H, W)
    default_pixel_size_um: float | None = None  # None: metadata.pixel_size_um (0 = unknown)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)

    @classmethod
    def from_config(
        cls, input: InputConfig, metadata: MetadataConfig, *, in_channels: int = 1
    ) -> DecodeOptions:
        return cls(
            max_pixels=input.max_pixels, channel=input.channel, plane=input.plane,
            rgb=input.rgb, in_channels=in_channels, metadata=metadata,
        )

    @property
    def fallback_pixel_size_um(self) -> float | None:
        size = self.default_pixel_size_um
        if size is None:
            size = self.metadata.pixel_size_um
        return size or None


def read_frame(ready: ReadyFile, options: DecodeOptions) -> Frame:
    """Decode the file `ready` names, exactly the version its key describes."""
    path = ready.path
    try:
        with open(path, "rb") as fh:
            _check_unchanged(fh, ready)
            pixels, pixel_size, acquired = _decode(fh, ready.key.size, path, options)
            _check_unchanged(fh, ready)
    except FileNotFoundError:
        raise FrameError("missing", f"{path}: file disappeared before it could be read; expected "
                         "it to stay until processed") from None
    except PermissionError:
        raise FrameError(
            "permission", f"{path}: no permission to read the file; expected it to be readable "
            "by the service user"
        ) from None
    except IsADirectoryError:
        raise FrameError("not_tiff", f"{path}: is a folder; expected a TIFF file") from None
    except OSError as exc:
        raise FrameError("corrupt", f"{path}: could not be read ({exc})") from None
    meta = FrameMeta(
        source=ready.key.source,
        pixel_size_um=pixel_size if pixel_size is not None else options.fallback_pixel_size_um,
        acquired_at=acquired or timestamp_ns(ready.key.mtime_ns),
        **parse_name(ready.key.source, options.metadata),
    )
    return Frame(meta=meta, pixels=pixels, ready_at=ready.ready_at, key=ready.key,
                 frame_id=ready.key.source)


def _check_unchanged(fh: BinaryIO, ready: ReadyFile) -> None:
    stat = os.fstat(fh.fileno())
    if (stat.st_size, stat.st_mtime_ns) != (ready.key.size, ready.key.mtime_ns):
        raise FrameError(
            "changed", f"{ready.path}: changed after it was judged complete (expected "
            f"{ready.key.size} bytes, found {stat.st_size}); its new version is read once complete"
        )


def _decode(
    fh: BinaryIO, size: int, path: Path, options: DecodeOptions
) -> tuple[np.ndarray, float | None, str]:
    if size == 0:
        raise FrameError("empty", f"{path}: file is empty (0 bytes); expected a TIFF image")
    _check_header(fh, size, path)
    try:
        # Only this file was judged complete: never follow an OME-TIFF into its sibling files.
        with tifffile.TiffFile(fh, name=path.name, _multifile=False) as tif:
            if not tif.series:
                raise FrameError("corrupt", f"{path}: holds no image; expected a TIFF image")
            series = tif.series[0]
            pages, samples = _select_pages(series, path, options)
            _check_data_in_file(pages, size, path)
            stack = [_read_page(page, series.keyframe.axes, samples) for page in pages]
            pixels = stack[0] if len(stack) == 1 else np.stack(stack)
            pixel_size, acquired = _physical_metadata(tif, series.keyframe)
    except (FrameError, OSError):
        raise
    except Exception as exc:
        logger.debug("decode of %s failed", path, exc_info=True)
        raise FrameError(
            "corrupt", f"{path}: TIFF data could not be decoded ({type(exc).__name__}: "
            f"{str(exc)[:120]}); expected a valid TIFF image"
        ) from None
    return _to_supported(pixels, path), pixel_size, acquired


def _check_header(fh: BinaryIO, size: int, path: Path) -> None:
    """Magic number and first IFD, so tifffile is only handed something that is a whole TIFF."""
    head = fh.read(16)
    fh.seek(0)
    kind = _TIFF_MAGIC.get(head[:4])
    if kind is None:
        if len(head) < 4 and any(magic.startswith(head) for magic in _TIFF_MAGIC):
            raise FrameError("truncated", f"{path}: ends inside the TIFF header; expected a "
                             "complete TIFF file")
        raise FrameError("not_tiff", f"{path}: is not a TIFF file (starts with {head[:8]!r}); "
                         "expected TIFF data in a file named like a TIFF")
    byteorder, big = kind
    offset_format, count_format, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    header_size = 16 if big else 8
    if len(head) < header_size:
        raise FrameError("truncated", f"{path}: ends inside the TIFF header ({size} bytes); "
                         "expected a complete TIFF file")
    (ifd,) = struct.unpack(byteorder + offset_format, head[header_size // 2 : header_size])
    count_size = struct.calcsize(count_format)
    if ifd + count_size > size:
        raise FrameError("truncated", f"{path}: ends before its first image directory (at byte "
                         f"{ifd}, file has {size}); expected a complete TIFF file")
    fh.seek(ifd)
    (count,) = struct.unpack(byteorder + count_format, fh.read(count_size))
    fh.seek(0)
    if ifd + count_size + count * entry_size > size:
        raise FrameError("truncated", f"{path}: ends inside its first image directory; expected "
                         "a complete TIFF file")


def _select_pages(
    series: tifffile.TiffPageSeries, path: Path, options: DecodeOptions
) -> tuple[list[Any], list[int] | None]:
    """The pages to read and the samples to keep of each (None: all), decided from the header."""
    page = series.keyframe
    _check_page(page, path, options)
    page_ndim = len(page.shape)
    axes, shape = series.axes, tuple(series.shape)
    if axes[-page_ndim:] != page.axes or shape[-page_ndim:] != tuple(page.shape):
        raise FrameError("shape", f"{path}: has an image layout ({axes} {shape}) that is not "
                         "one image per page; expected 2-D pages")
    lead_axes, lead_shape = axes[:-page_ndim], shape[:-page_ndim]
    n_channels, channels_are_samples = _channel_layout(page, lead_axes, lead_shape, path, options)
    wanted = range(options.channel, options.channel + options.in_channels)
    if wanted.stop > n_channels:
        asked = (f"channel index {wanted.start} (input.channel)" if len(wanted) == 1 else
                 f"channel indices {wanted.start}..{wanted.stop - 1} (input.channel and the "
                 "model's input channels)")
        raise FrameError("shape", f"{path}: has {n_channels} channel(s); expected {asked} to "
                         "exist")
    plane_axis = next((a for a in ("Z", "I", "Q") if a in lead_axes), None)
    n_planes = lead_shape[lead_axes.index(plane_axis)] if plane_axis else 1
    if options.plane >= n_planes:
        raise FrameError("shape", f"{path}: has {n_planes} plane(s); expected plane index "
                         f"{options.plane} (input.plane) to exist")
    indices = []
    for channel in wanted[:1] if channels_are_samples else wanted:
        position = [
            channel if axis == "C" else options.plane if axis == plane_axis else 0
            for axis in lead_axes
        ]
        indices.append(int(np.ravel_multi_index(position, lead_shape)) if lead_axes else 0)
    pages = [series[i] for i in indices]
    if any(p is None for p in pages):
        raise FrameError("shape", f"{path}: the selected channel/plane is not stored in this "
                         "file (a multi-file OME-TIFF); expected it in the file itself")
    return pages, list(wanted) if channels_are_samples else None


def _check_page(page: Any, path: Path, options: DecodeOptions) -> None:
    dtype = np.dtype(page.dtype) if page.dtype is not None else None
    if dtype is None or dtype.kind not in "ui":
        raise FrameError("dtype", f"{path}: pixels are {dtype or 'of an unknown type'}; "
                         "expected unsigned 8- or 16-bit integer pixels")
    height, width = page.imagelength, page.imagewidth
    if height * width > options.max_pixels:
        raise FrameError("too_large", f"{path}: frame is {width} x {height} = {height * width} "
                         f"pixels; expected at most input.max_pixels = {options.max_pixels}")
    if page.compression != 1:
        try:
            tifffile.TIFF.DECOMPRESSORS[page.compression]
        except KeyError:
            raise FrameError(
                "corrupt", f"{path}: is compressed with {page.compression.name}, which needs the "
                "imagecodecs package; expected uncompressed, zlib or LZMA data without it"
            ) from None


def _channel_layout(
    page: Any, lead_axes: str, lead_shape: tuple[int, ...], path: Path, options: DecodeOptions
) -> tuple[int, bool]:
    """(number of channels, whether they are the samples of each pixel rather than pages)."""
    is_rgb = page.photometric == tifffile.PHOTOMETRIC.RGB and page.samplesperpixel >= 3
    has_samples = "S" in page.axes
    if has_samples and "C" not in lead_axes and (not is_rgb or options.in_channels > 1):
        return page.shape[page.axes.index("S")], True
    if is_rgb and options.rgb != "luminance":
        raise FrameError("dtype", f"{path}: is an RGB image; expected grayscale (set input.rgb "
                         "= \"luminance\" to analyse RGB frames as their luminance)")
    if has_samples and not is_rgb:
        raise FrameError("shape", f"{path}: stores channels both as pages and as samples; "
                         "expected one of the two")
    return (lead_shape[lead_axes.index("C")] if "C" in lead_axes else 1), False


def _check_data_in_file(pages: list[Any], size: int, path: Path) -> None:
    for page in pages:
        end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)),
                  default=0)
        if not page.dataoffsets:
            raise FrameError("corrupt", f"{path}: an image page has no pixel data; expected "
                             "strips or tiles")
        if end > size:
            raise FrameError("truncated", f"{path}: image data ends at byte {end} but the file "
                             f"has {size} bytes; expected a completely written TIFF")


def _read_page(page: Any, axes: str, samples: list[int] | None) -> np.ndarray:
    data: np.ndarray = page.asarray(maxworkers=1)
    if "S" not in axes:
        return data
    data = np.moveaxis(data, axes.index("S"), 0)  # (S, H, W)
    if samples is not None:
        return data[samples[0]] if len(samples) == 1 else data[samples]
    luminance = np.tensordot(_LUMINANCE, data[:3].astype(np.float32), axes=1)
    info = np.iinfo(data.dtype)
    return np.clip(np.rint(luminance), info.min, info.max).astype(data.dtype)


def _to_supported(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype in (np.uint8, np.uint16):
        return pixels
    low, high = int(pixels.min()), int(pixels.max())
    if low < 0 or high > 65535:
        raise FrameError("dtype", f"{path}: {pixels.dtype} pixels range {low}..{high}; expected "
                         "values that fit unsigned 16-bit (0..65535)")
    return pixels.astype(np.uint8 if pixels.dtype.itemsize == 1 else np.uint16)


def _physical_metadata(tif: tifffile.TiffFile, page: Any) -> tuple[float | None, str]:
    """(pixel size in µm or None, acquisition time ISO 8601 or "") from the file's own tags."""
    size, acquired = None, ""
    if tif.is_ome and tif.ome_metadata:
        size, acquired = _ome_metadata(tif.ome_metadata)
    if size is None:
        size = _resolution_um(tif, page)
    return size, acquired


def _resolution_um(tif: tifffile.TiffFile, page: Any) -> float | None:
    """Pixel size from XResolution with ImageJ's unit, or with the ResolutionUnit tag."""
    if 282 not in page.tags:
        return None
    xres = page.get_resolution()[0]
    if not xres or not math.isfinite(xres) or xres <= 0:
        return None
    imagej_unit = (tif.imagej_metadata or {}).get("unit") if tif.is_imagej else None
    if imagej_unit:
        scale = _UM_PER_UNIT.get(str(imagej_unit).lower())
        return scale / xres if scale else None
    unit = page.resolutionunit
    if unit == 2 and xres <= _MAX_PRINT_DPI and float(xres).is_integer():
        return None
    scale = _UM_PER_RESOLUTION_UNIT.get(unit)
    return scale / xres if scale else None


def _ome_metadata(xml: str) -> tuple[float | None, str]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, ""
    image = next((e for e in root.iter() if _local(e.tag) == "Image"), None)
    if image is None:
        return None, ""
    acquired = next(
        ((e.text or "").strip() for e in image if _local(e.tag) == "AcquisitionDate"), ""
    )
    pixels = next((e for e in image if _local(e.tag) == "Pixels"), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None, acquired
    try:
        value = float(pixels.attrib["PhysicalSizeX"])
    except ValueError:
        return None, acquired
    scale = _UM_PER_UNIT.get(pixels.attrib.get("PhysicalSizeXUnit", "µm").lower())
    if scale is None or not math.isfinite(value) or value <= 0:
        return None, acquired
    return value * scale, acquired


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
