"""Plate/well/field/channel/plane from instrument file names."""

from __future__ import annotations

import doctest

import pytest

import daemon.decode.names
from daemon.config import ConfigError, MetadataConfig
from daemon.decode.names import check_regex, parse_name, well_name

AUTO = MetadataConfig(preset="auto")
UNKNOWN = {"plate": "", "well": "", "field": -1, "channel": -1, "plane": -1}


def meta(plate: str, well: str, field: int, channel: int, plane: int) -> dict[str, object]:
    return {"plate": plate, "well": well, "field": field, "channel": channel, "plane": plane}


def test_doctests() -> None:
    assert doctest.testmod(daemon.decode.names).failed == 0


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
    ("Plate1_C7_s3.tif", meta("Plate1", "C07", 3, -1, -1)),  # one wavelength
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


# Names as the vendors' documentation and public screens show them.
@pytest.mark.parametrize(("source", "expected"), [
    ("AssayPlate_Greiner_#655090/AssayPlate_Greiner_#655090_C02_T0001F001L01A01Z01C01.tif",
     meta("AssayPlate_Greiner_#655090", "C02", 1, 1, 1)),
    ("Dest210809-141456_K06_T0001F001L01A03Z01C04.tif", meta("Dest210809-141456", "K06", 1, 4, 1)),
    ("MIG-Exp03-CP-40X-bin1X1_K07_T0001F012L01A01Z03C02.tif",
     meta("MIG-Exp03-CP-40X-bin1X1", "K07", 12, 2, 3)),
])
def test_cellvoyager(source: str, expected: dict[str, object]) -> None:
    assert parse_name(source, MetadataConfig(preset="cellvoyager")) == expected
    assert parse_name(source, AUTO) == expected


@pytest.mark.parametrize(("source", "expected"), [
    ("Plate 3/W0001F0001T0001Z001C1.tif", meta("Plate 3", "W0001", 1, 1, 1)),
    ("run/W0384F0009T0002Z010C4.tif", meta("run", "W0384", 9, 4, 10)),
])
def test_cq1(source: str, expected: dict[str, object]) -> None:
    assert parse_name(source, MetadataConfig(preset="cq1")) == expected
    assert parse_name(source, AUTO) == expected


@pytest.mark.parametrize(("source", "expected"), [
    ("P123_A05_f1.tif", meta("P123", "A05", 1, -1, -1)),
    ("screen3_H12_s2_w1.tif", meta("screen3", "H12", 2, 1, -1)),
    ("my_plate_P24_f10_ch3.tiff", meta("my_plate", "P24", 10, 3, -1)),
])
def test_generic(source: str, expected: dict[str, object]) -> None:
    assert parse_name(source, MetadataConfig(preset="generic")) == expected
    assert parse_name(source, AUTO) == expected


@pytest.mark.parametrize("source", [
    "P123_A05_x1.tif",  # "x1" is no field token, and "A05_x1" no plate+well
    "P123_a05_f1.tif",  # a lower-case row is no MetaXpress or generic well
    "plate_Q05_f1.tif",  # row Q is beyond a 384-well plate: not a generic well
    "W01F0001T0001Z001C1.tif",  # CQ1 numbers wells with four digits
    "AssayPlate_C02_T0001F001.tif",  # a CellVoyager name cut short
    "image_0001.tif",
    "r02c03f04-ch1.tiff",  # an Operetta name without plane and flags
])
def test_names_no_preset_describes_get_no_well(source: str, caplog) -> None:
    before = daemon.decode.names.unparsed_names()
    with caplog.at_level("WARNING", logger="daemon.decode.names"):
        assert parse_name(f"never-seen-{source}/{source}", AUTO) == UNKNOWN
    assert daemon.decode.names.unparsed_names() == before + 1
    assert "match no preset" in caplog.text and "metadata.preset" in caplog.text


def test_an_unparsed_folder_is_logged_once_and_every_name_counted(caplog) -> None:
    before = daemon.decode.names.unparsed_names()
    with caplog.at_level("WARNING", logger="daemon.decode.names"):
        for i in range(5):
            assert parse_name(f"odd-folder-once/scan_{i}.tif", AUTO) == UNKNOWN
    assert daemon.decode.names.unparsed_names() == before + 5
    assert caplog.text.count("match no preset") == 1


def test_the_unparsed_count_is_exported(tmp_path) -> None:
    from daemon.ops.metrics import Metrics

    metrics = Metrics()
    before = metrics.registry.get_sample_value("artifactd_filenames_unparsed_total")
    parse_name("exported-count/scan.tif", AUTO)
    assert metrics.registry.get_sample_value("artifactd_filenames_unparsed_total") == before + 1


def test_an_upper_case_field_token_is_not_read_as_a_well() -> None:
    assert parse_name("P123_A05_F1.tif", MetadataConfig(preset="imagexpress")) == UNKNOWN
    assert parse_name("P123_A05_F1.tif", AUTO) == meta("P123", "A05", 1, -1, -1)
