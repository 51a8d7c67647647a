"""zarr internals: used in one module only, for the zarr releases pyproject pins, all present."""

from __future__ import annotations

import ast
import importlib
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import zarr
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from daemon.results import zarr_internals

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("daemon", "engines")


def zarr_requirement() -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "zarr"]
    assert len(found) == 1, found
    return found[0]


def test_pyproject_pins_zarr_to_the_releases_the_internals_were_checked_for() -> None:
    pinned = zarr_requirement().specifier
    assert pinned == SpecifierSet(zarr_internals.ZARR_SUPPORTED)
    assert any(spec.operator == "<" for spec in pinned), f"no upper bound on zarr: {pinned}"


def test_installed_zarr_is_inside_that_bound() -> None:
    installed = version("zarr")
    assert installed in SpecifierSet(zarr_internals.ZARR_SUPPORTED), installed


def test_each_internal_relied_on_exists(tmp_path: Path) -> None:
    assert callable(importlib.import_module("zarr.core.sync").sync)
    root = zarr.open_group(tmp_path / "probe.zarr", mode="w", zarr_format=3)
    column = root.create_array("c", shape=(10,), chunks=(4,), dtype=np.int32, fill_value=-1)
    async_column = column.async_array
    assert isinstance(zarr_internals.async_group(root), zarr.AsyncGroup)
    assert zarr_internals.chunk_key(async_column, (2,)) == "c/2"
    assert zarr_internals.fill_value(async_column) == -1
    assert zarr_internals.run(async_column.getitem(slice(0, 3))).tolist() == [-1, -1, -1]
    # The attributes updated through the AsyncGroup are the Group's own.
    zarr_internals.run(zarr_internals.async_group(root).update_attributes({"k": 1}))
    assert root.attrs["k"] == 1
    assert zarr.open_group(tmp_path / "probe.zarr", mode="r").attrs["k"] == 1
    relied_on = {name for _where, name in zarr_internals.INTERNALS}
    assert relied_on == {"sync", "_async_group", "encode_chunk_key", "fill_value"}


def _private_zarr_uses(path: Path) -> list[str]:
    """zarr.core imports and `._async_*` attribute reads in one source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zarr.core"):
            found.append(f"{path.name}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.startswith("zarr.core")]
        elif isinstance(node, ast.Attribute) and (
            node.attr.startswith("_async_") or node.attr == "encode_chunk_key"
        ):
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_no_other_module_reaches_into_zarr() -> None:
    own = Path(zarr_internals.__file__).resolve()
    found = [
        use
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if path.resolve() != own
        for use in _private_zarr_uses(path)
    ]
    assert found == []
    assert _private_zarr_uses(own), "the scan must see the internals where they are"
