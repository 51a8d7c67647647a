"""Plate/well/field/channel/plane from instrument file names."""

from __future__ import annotations

import doctest

import pytest

import daemon.metadata
from daemon.config import ConfigError, MetadataConfig
from daemon.metadata import check_regex, parse_name, well_name

AUTO = MetadataConfig(preset="auto")
UNKNOWN = {"plate": "", "well": "", "field": -1, "channel": -1, "plane": -1}


def meta(plate: str, well: str, field: int, channel: int, plane: int) -> dict[str, object]:
    return {"plate": plate, "well": well, "field": field, "channel": channel, "plane": plane}


def test_doctests() -> None:
    assert doctest.testmod(daemon.metadata).failed == 0


@pytest.mark.parametrize(("source", "expected"), [
    ("Meas 1/r02c03f04p01-ch1sk1fk1fl1.tiff", meta("Meas 1", "B03", 4, 1, 1)),
    # Harmony's export puts the TIFFs into <measurement>/Images/
    ("Screen/Plate7__2024-05-01/Images/r16c24f12p03-ch4sk2fk1fl1.tiff",
     meta("Plate7__2024-05-01", "P24", 12, 4, 3)),
    ("R08C12F01P01-CH2SK1FK1FL1.TIF", meta("", "H12", 1, 2, 1)),
])
def test_operetta(source: str, expected: dict[str, object]) -> None:
    assert parse_name(source, MetadataConfig(preset="operetta")) == expected
    assert parse_name(source, AUTO) == expected


@pytest.mark.parametrize(("source", "expected"), [
    ("Plate1_C07_s3_w2.tif", meta("Plate1", "C07", 3, 2, -1)),
    ("run/My_Assay_Plate_H12_s1_w1.TIF", meta("My_Assay_Plate", "H12", 1, 1, -1)),
    ("Plate1_C07_s3_w2_thumb8A1B2C3D.tif", meta("Plate1", "C07", 3, 2, -1)),
    ("Plate1_C07_s3_w2C94AF5F4-6E77-4F6B-9C64-1E1B4B1F9F2A.tif", meta("Plate1", "C07", 3, 2, -1)),
    ("Plate1_C07_w2.tif", meta("Plate1", "C07", -1, 2, -1)),  # one site
    ("Plate1_c7_s3.tif", meta("Plate1", "C07", 3, -1, -1)),  # one wavelength
    ("exp/TimePoint_1/ZStep_4/Plate1_B02_s1_w1.tif", meta("Plate1", "B02", 1, 1, 4)),
    ("Plate1_AF48_s1_w1.tif", meta("Plate1", "AF48", 1, 1, -1)),  # 1536-well row AF
])
def test_imagexpress(source: str, expected: dict[str, object]) -> None:
    assert parse_name(source, MetadataConfig(preset="imagexpress")) == expected
    assert parse_name(source, AUTO) == expected


def test_a_preset_does_not_parse_the_other_instruments_names() -> None:
    assert parse_name("Plate1_C07_s3_w2.tif", MetadataConfig(preset="operetta")) == UNKNOWN
    assert parse_name("p/r02c03f04p01-ch1sk1fk1fl1.tiff",
                      MetadataConfig(preset="imagexpress")) == UNKNOWN


def test_unrecognised_names_and_preset_none() -> None:
    assert parse_name("folder/image_0001.tif", AUTO) == UNKNOWN
    assert parse_name("Plate1_C07_s3_w2.tif", MetadataConfig(preset="none")) == UNKNOWN


def test_regex_with_row_and_column_numbers() -> None:
    config = MetadataConfig(
        preset="regex",
        regex=r"(?P<plate>[^/]+)/well_(?P<row>\d+)_(?P<column>\d+)/f(?P<field>\d+)_z(?P<plane>\d+)"
              r"_c(?P<channel>\d+)\.tif$",
    )
    assert parse_name("Screen A/well_3_7/f2_z5_c1.tif", config) == meta("Screen A", "C07", 2, 1, 5)
    assert parse_name("elsewhere.tif", config) == UNKNOWN


def test_regex_with_well_and_row_letter() -> None:
    by_well = MetadataConfig(preset="regex", regex=r"(?i)(?P<well>[A-P]\d+)-(?P<field>\d+)\.tif$")
    assert parse_name("PlateX/d5-3.tif", by_well) == meta("PlateX", "D05", 3, -1, -1)
    by_row = MetadataConfig(preset="regex", regex=r"(?P<row>[A-P])(?P<column>\d+)\.tif$")
    assert parse_name("E11.tif", by_row)["well"] == "E11"


@pytest.mark.parametrize("regex", ["(?P<plate>[", r"(?P<colour>\w+)", r"\w+\.tif"])
def test_unusable_regex_names_the_key(regex: str) -> None:
    config = MetadataConfig(preset="regex", regex=regex)
    with pytest.raises(ConfigError, match=r"^metadata\.regex: "):
        check_regex(config)
    with pytest.raises(ConfigError, match=r"^metadata\.regex: "):
        parse_name("a.tif", config)


def test_well_names() -> None:
    assert [well_name("1", "1"), well_name("h", "12"), well_name("16", "24")] == [
        "A01", "H12", "P24"]
    assert well_name("32", "48") == "AF48"
