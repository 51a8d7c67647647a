"""The zarr internals the results store relies on, in one place, for the zarr releases checked.

zarr's public API has no way to run several array operations in one event-loop call, to
update a group's attributes inside such a call, or to name a chunk's key; the results store
needs all three for its single durable append (daemon.results.store). Everything else in the
store is public API. Each internal is wrapped here so that a zarr upgrade breaks one module, and
pyproject pins zarr to ZARR_SUPPORTED, the releases these were checked against;
tests/daemon/test_zarr_internals.py checks the pin, the installed release and each internal.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import zarr
from zarr.core.sync import sync as _zarr_sync

# The releases these internals were checked against; pyproject's zarr requirement says the same.
ZARR_SUPPORTED = ">=3.1,<3.2"

# What this module relies on, for the tests: (where, name).
INTERNALS = (
    ("zarr.core.sync", "sync"),
    ("zarr.Group", "_async_group"),
    ("ArrayV3Metadata", "encode_chunk_key"),
    ("ArrayV3Metadata", "fill_value"),
)


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on zarr's own event loop and return its result (blocking)."""
    return _zarr_sync(coroutine)


def async_group(group: zarr.Group) -> zarr.AsyncGroup:
    """The AsyncGroup behind a Group, sharing its metadata (so attribute updates agree)."""
    return group._async_group


def chunk_key(array: zarr.AsyncArray, coords: tuple[int, ...]) -> str:
    """The store key of a chunk, relative to the array ("c/5/0/0")."""
    return str(array.metadata.encode_chunk_key(coords))


def fill_value(array: zarr.AsyncArray) -> Any:
    """The array's fill value as its metadata holds it (zarr.Array has it, AsyncArray not)."""
    return array.metadata.fill_value
