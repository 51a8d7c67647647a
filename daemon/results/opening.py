"""Opening a results store: the folder checks, the one-writer lock, creating the tables of a new
store, and the settings history of an existing one.

Only one process may write a store: the writer holds an exclusive flock on the store folder."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import zarr

from daemon.results.chunks import create_column
from daemon.results.durable import DurableLocalStore
from daemon.results.reads import jsonable
from daemon.results.schema import LAYOUT_VERSION, TABLES, StoreError, why
from engines import __version__
from engines.timestamps import timestamp

logger = logging.getLogger(__name__)


def open_read_only(path: Path) -> tuple[DurableLocalStore, Any]:
    """An existing store's zarr store and root group, to read."""
    if not path.exists():
        raise StoreError(f"results store {path}: not found")
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a results store (no zarr.json in it)")
    store = DurableLocalStore(path, read_only=True, fsync=False)
    return store, open_root(store, path, writer=False)


def open_writable(path: Path, attributes: dict | None,
                  fsync: bool) -> tuple[int, DurableLocalStore, Any]:
    """Create or open a store to write, holding its lock: (lock fd, zarr store, root group).
    A new store gets its tables; an existing one records `attributes` when they changed."""
    check_folder(path)
    fd = prepare_folder(path)
    try:
        store = DurableLocalStore(path, fsync=fsync)
        root = open_root(store, path, writer=True)
        attrs = root.attrs.asdict()
        if "artifactd" not in attrs:
            if attrs or not is_empty_layout(root, path):
                raise StoreError(f"{path}: a zarr store, but not an artifactd results store")
            initialise(root, store, attributes or {})
        elif attributes is not None:
            record_settings(root, attrs, attributes)
    except BaseException:
        release_lock(fd)
        raise
    return fd, store, root


def check_folder(path: Path) -> None:
    """A store is written only into a new folder, an empty one, or a zarr store."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"results store {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").is_file():
        raise StoreError(
            f"results store {path}: the folder is not empty and holds no zarr store; "
            "refusing to write into it"
        )


def prepare_folder(path: Path) -> int:
    """Create the folder, take the writer's lock and remove what a crash left: the lock's fd."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = take_lock(path)
    except OSError as exc:
        raise StoreError(f"results store {path}: cannot create it ({why(exc)})") from exc
    try:
        # Temporary files of an append cut short by a crash; only a writer makes them, and
        # this one holds the lock, so none of them is in use.
        for leftover in path.rglob(".*.partial"):
            leftover.unlink()
    except OSError as exc:
        release_lock(fd)
        raise StoreError(f"results store {path}: cannot create it ({why(exc)})") from exc
    return fd


def take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"results store {path}: another writer (process or ResultsStore) has it open"
        ) from None
    return fd


def release_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def open_root(store: DurableLocalStore, path: Path, *, writer: bool) -> Any:
    """The root group, or StoreError when the folder is not a zarr v3 store."""
    if not writer:
        try:
            return zarr.open_group(store=store, mode="r", zarr_format=3)
        except Exception as exc:
            raise StoreError(f"{path}: not a readable zarr v3 store ({why(exc)})") from exc
    try:
        return zarr.open_group(store=store, mode="a", zarr_format=3)
    except OSError:
        raise
    except Exception as exc:
        raise StoreError(f"{path}: not a zarr v3 store ({why(exc)})") from exc


def settings(attributes: dict) -> dict:
    """What the root attribute "artifactd" records: the caller's attributes and our version."""
    return jsonable({**attributes, "version": __version__, "layout": LAYOUT_VERSION})


def initialise(root: Any, store: DurableLocalStore, attributes: dict) -> None:
    """Create the tables; the root attributes land last, so a store is complete or not."""
    recorded = settings(attributes)
    recorded["created_at"] = timestamp()
    store.stage()
    try:
        for table, (columns, chunk) in TABLES.items():
            group = root.require_group(table)
            for name, dtype in columns.items():
                create_column(group, name, dtype, chunk, 0)
        root.require_group("masks")
        root.attrs.update(
            {
                "artifactd": recorded,
                "committed": {"frames": 0, "artifacts": 0, "failures": 0, "stacks": {}},
            }
        )
        store.flush(last="zarr.json")
    finally:
        store.discard()


def record_settings(root: Any, attrs: dict, attributes: dict) -> None:
    """New settings replace the recorded ones; those move to "artifactd_history" with the
    frame count they covered. Unchanged settings leave the store as it is."""
    old = dict(attrs["artifactd"])
    new = settings(attributes)
    if {k: v for k, v in old.items() if k not in ("created_at", "changed_at")} == new:
        return
    history = [*attrs.get("artifactd_history", []), {
        **old, "frames_before": int(attrs.get("committed", {}).get("frames", 0))
    }]
    new["created_at"] = old.get("created_at", timestamp())
    new["changed_at"] = timestamp()
    root.attrs.update({"artifactd": new, "artifactd_history": history})


def is_empty_layout(root: Any, path: Path) -> bool:
    """Nothing, or the empty tables of a creation cut short before the root attributes."""
    members = dict(root.members(max_depth=None))
    for name, node in members.items():
        top = name.split("/")[0]
        if top not in (*TABLES, "masks") or (top == "masks" and name != "masks"):
            return False
        if isinstance(node, zarr.Array) and node.shape != (0,):
            return False
    if members:
        logger.warning("%s: completing a store whose creation was interrupted", path)
    return True
