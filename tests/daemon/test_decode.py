"""Decoding real TIFF files written by tifffile the way instruments and ImageJ write them."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from daemon.config import InputConfig, MetadataConfig
from daemon.decode.tiff import DecodeOptions, FrameError, read_frame
from daemon.frames import FrameKey, ReadyFile
from tests.daemon.badfiles import HUGE_SHAPE, running_as_root, tiff_bytes, write_bad_corpus

OPTIONS = DecodeOptions(max_pixels=64_000_000, channel=0, plane=0, rgb="refuse")


def ready(path: Path, root: Path | None = None) -> ReadyFile:
    st = path.stat()
    source = path.relative_to(root or path.parent).as_posix()
    return ReadyFile(path, FrameKey(source, st.st_size, st.st_mtime_ns), time.monotonic())


def options(**changes: object) -> DecodeOptions:
    fields = {name: getattr(OPTIONS, name) for name in DecodeOptions.__dataclass_fields__}
    return DecodeOptions(**{**fields, **changes})  # type: ignore[arg-type]


def failure(path: Path, opts: DecodeOptions = OPTIONS) -> FrameError:
    with pytest.raises(FrameError) as caught:
        read_frame(ready(path), opts)
    return caught.value


def test_plain_uint16_frame(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 4096, (40, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", image)
    frame = read_frame(ready(tmp_path / "a.tif"), OPTIONS)
    np.testing.assert_array_equal(frame.pixels, image)
    assert frame.key is not None and frame.frame_id == "a.tif"
    assert frame.meta.source == "a.tif" and frame.meta.pixel_size_um is None
    assert frame.meta.acquired_at.endswith("Z")  # the file time, RFC 3339 UTC


def test_bad_corpus_reasons_and_messages(tmp_path: Path) -> None:
    cases = write_bad_corpus(tmp_path)
    assert len(cases) >= 10
    for name, reason in cases.items():
        error = failure(tmp_path / name)
        assert (name, error.reason) == (name, reason)
        assert str(tmp_path / name) in error.message
        assert "\n" not in error.message and "expected" in error.message


def test_unreadable_file_is_permission(tmp_path: Path) -> None:
    path = tmp_path / "locked.tif"
    path.write_bytes(tiff_bytes(np.zeros((8, 8), np.uint16)))
    path.chmod(0)
    item = ready(path)
    if not running_as_root():
        with pytest.raises(FrameError) as caught:
            read_frame(item, OPTIONS)
        reason, message = caught.value.reason, caught.value.message
    else:
        reason, message = _read_as_nobody(item)
    assert reason == "permission" and str(path) in message


def _read_as_nobody(item: ReadyFile) -> tuple[str, str]:
    """Root reads any file: decode in a forked child that dropped to the nobody user."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                read_frame(item, OPTIONS)
                answer = "read|"
            except FrameError as exc:
                answer = f"{exc.reason}|{exc.message}"
            os.write(write_end, answer.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(pid, 0)
    reason, _, message = answer.partition("|")
    return reason, message


def test_missing_and_changed(tmp_path: Path) -> None:
    path = tmp_path / "gone.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16))
    item = ready(path)
    path.unlink()
    with pytest.raises(FrameError, match=r"gone\.tif") as caught:
        read_frame(item, OPTIONS)
    assert caught.value.reason == "missing"

    path = tmp_path / "rewritten.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16))
    item = ready(path)
    tifffile.imwrite(path, np.zeros((16, 16), np.uint16))
    with pytest.raises(FrameError, match=r"rewritten\.tif") as caught:
        read_frame(item, OPTIONS)
    assert caught.value.reason == "changed"


def test_too_large_is_refused_before_reading_pixels(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.ones((2000, 2000), np.uint16))  # 8 MB of real pixels
    tracemalloc.start()
    try:
        error = failure(path, options(max_pixels=1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "too_large" and "2000 x 2000" in error.message
    assert peak < 1_000_000  # the 8 MB frame was never allocated
    assert read_frame(ready(path), OPTIONS).pixels.shape == (2000, 2000)


def test_header_claiming_a_huge_frame(tmp_path: Path) -> None:
    cases = write_bad_corpus(tmp_path)
    huge = next(name for name, reason in cases.items() if reason == "too_large")
    error = failure(tmp_path / huge, options(max_pixels=HUGE_SHAPE[0] * HUGE_SHAPE[1]))
    assert error.reason == "truncated"  # allowed size: then its missing pixel data is noticed


def test_imagej_hyperstack_channel_and_plane(tmp_path: Path) -> None:
    stack = np.zeros((2, 3, 4, 8, 10), np.uint16)  # TZCYX
    for t, z, c in np.ndindex(2, 3, 4):
        stack[t, z, c] = 100 * t + 10 * z + c
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TZCYX"})
    frame = read_frame(ready(path), options(channel=3, plane=2))
    assert frame.pixels.shape == (8, 10) and np.all(frame.pixels == 23)
    frame = read_frame(ready(path), options(channel=1, plane=1, in_channels=3))
    assert frame.pixels.shape == (3, 8, 10)
    assert [int(p[0, 0]) for p in frame.pixels] == [11, 12, 13]
    assert failure(path, options(channel=4)).reason == "shape"
    assert failure(path, options(plane=3)).reason == "shape"
    assert failure(path, options(channel=2, in_channels=3)).reason == "shape"


def test_ome_tiff_channel_and_plane(tmp_path: Path) -> None:
    stack = np.zeros((3, 2, 8, 10), np.uint16)  # CZYX
    for c, z in np.ndindex(3, 2):
        stack[c, z] = 10 * c + z
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "CZYX"})
    assert int(read_frame(ready(path), options(channel=2, plane=1)).pixels[0, 0]) == 21
    assert "2 plane(s)" in failure(path, options(plane=2)).message


def test_plain_page_stack_counts_as_planes(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as writer:
        for i in range(3):
            writer.write(np.full((8, 8), i, np.uint16), metadata=None)
    assert int(read_frame(ready(path), options(plane=2)).pixels[0, 0]) == 2
    assert failure(path, options(channel=1)).reason == "shape"


def test_rgb_luminance_and_rgb_as_channels(tmp_path: Path) -> None:
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 1] = 200
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    error = failure(path)
    assert error.reason == "dtype" and 'input.rgb = "luminance"' in error.message
    frame = read_frame(ready(path), options(rgb="luminance"))
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (8, 10)
    assert int(frame.pixels[0, 0]) == round(0.7154 * 200)
    frame = read_frame(ready(path), options(in_channels=3))
    assert frame.pixels.shape == (3, 8, 10) and int(frame.pixels[1, 0, 0]) == 200


def test_integer_types_convert_when_lossless(tmp_path: Path) -> None:
    for dtype in (np.int16, np.uint32, np.int32):
        path = tmp_path / f"{np.dtype(dtype).name}.tif"
        tifffile.imwrite(path, np.full((4, 4), 4095, dtype))
        frame = read_frame(ready(path), OPTIONS)
        assert frame.pixels.dtype == np.uint16 and int(frame.pixels[0, 0]) == 4095
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, np.full((4, 4), 70_000, np.uint32))
    assert failure(path).reason == "dtype"
    path = tmp_path / "u8.tif"
    tifffile.imwrite(path, np.full((4, 4), 7, np.uint8))
    assert read_frame(ready(path), OPTIONS).pixels.dtype == np.uint8


def test_pixel_size_from_ome_xml(tmp_path: Path) -> None:
    path = tmp_path / "um.ome.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), ome=True,
                     metadata={"PhysicalSizeX": 0.325, "PhysicalSizeXUnit": "µm"})
    assert read_frame(ready(path), OPTIONS).meta.pixel_size_um == pytest.approx(0.325)
    path = tmp_path / "nm.ome.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), ome=True,
                     metadata={"PhysicalSizeX": 650, "PhysicalSizeXUnit": "nm"})
    assert read_frame(ready(path), OPTIONS).meta.pixel_size_um == pytest.approx(0.65)


def test_pixel_size_from_imagej_and_tiff_tags(tmp_path: Path) -> None:
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), imagej=True,
                     resolution=(1 / 0.65, 1 / 0.65), metadata={"unit": "micron"})
    assert read_frame(ready(path), OPTIONS).meta.pixel_size_um == pytest.approx(0.65, rel=1e-4)
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), resolution=(20_000, 20_000),
                     resolutionunit="CENTIMETER")
    assert read_frame(ready(path), OPTIONS).meta.pixel_size_um == pytest.approx(0.5)
    path = tmp_path / "dpi.tif"  # a printing resolution, not a calibration
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), resolution=(72, 72),
                     resolutionunit="INCH")
    assert read_frame(ready(path), OPTIONS).meta.pixel_size_um is None
    assert read_frame(ready(path), options(default_pixel_size_um=0.9)).meta.pixel_size_um == 0.9
    configured = options(metadata=MetadataConfig(pixel_size_um=1.3))
    assert read_frame(ready(path), configured).meta.pixel_size_um == 1.3


def test_metadata_from_name_and_acquisition_date(tmp_path: Path) -> None:
    folder = tmp_path / "Plate 4" / "Images"
    folder.mkdir(parents=True)
    path = folder / "r03c07f02p01-ch2sk1fk1fl1.tiff"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), ome=True,
                     metadata={"AcquisitionDate": "2024-05-01T10:00:00"})
    meta = read_frame(ready(path, tmp_path), OPTIONS).meta
    assert (meta.source, meta.plate, meta.well, meta.field, meta.channel, meta.plane) == (
        "Plate 4/Images/r03c07f02p01-ch2sk1fk1fl1.tiff", "Plate 4", "C07", 2, 2, 1)
    assert meta.acquired_at == "2024-05-01T10:00:00"


def test_options_from_config() -> None:
    built = DecodeOptions.from_config(
        InputConfig(max_pixels=500, channel=1, plane=2, rgb="luminance"),
        MetadataConfig(preset="imagexpress", pixel_size_um=0.7), in_channels=2)
    assert (built.max_pixels, built.channel, built.plane, built.rgb, built.in_channels) == (
        500, 1, 2, "luminance", 2)
    assert built.metadata.preset == "imagexpress" and built.fallback_pixel_size_um == 0.7
    assert DecodeOptions.from_config(InputConfig(), MetadataConfig()).fallback_pixel_size_um is None
