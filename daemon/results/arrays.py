"""The store's arrays at their committed length: opened with the store (a writer adds the columns
and tables an older store lacks), trimmed at open and close, and read again after a failed write.

zarr grows an array's shape before its data lands, so the shapes are not the truth: the root
attribute `committed` is (see daemon.results.store)."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import zarr

from daemon.results.chunks import as_async, create_column, patchable, string_codecs
from daemon.results.durable import DurableLocalStore
from daemon.results.ngff import LABEL_NAME, create_mask_stack
from daemon.results.schema import LAYOUT_VERSION, TABLES, Column, Stack, StoreError

logger = logging.getLogger(__name__)

Columns = dict[str, dict[str, Column]]  # table -> column name -> column


def committed_counts(attrs: dict, path: Path) -> dict[str, Any]:
    """The root attribute `committed`, checked: rows per table, frames per stack."""
    if "artifactd" not in attrs or "committed" not in attrs:
        raise StoreError(f"{path}: not an artifactd results store")
    layout = int(attrs["artifactd"].get("layout", 0))
    if layout > LAYOUT_VERSION:
        raise StoreError(
            f"{path}: written by a newer artifactd (store layout {layout}; this "
            f"version reads up to {LAYOUT_VERSION})"
        )
    return attrs["committed"]


def open_columns(root: Any, path: Path, counts: dict[str, int], *, writer: bool) -> Columns:
    """Every table column; a writer creates those an older store lacks, a reader sees them
    as fill values."""
    opened: Columns = {}
    for table, (columns, chunk) in TABLES.items():
        # A table an older store lacks reads as empty (a writer adds it).
        group = root.require_group(table) if writer else root.get(table)
        present = set(group.array_keys()) if group is not None else set()
        opened[table] = {}
        for name, dtype in columns.items():
            if name not in present:
                if not writer:  # a column an older store lacks: fill values for readers
                    opened[table][name] = Column(f"{table}/{name}", None, dtype, None, None)
                    continue
                create_column(group, name, dtype, chunk, counts[table])
                logger.info("%s: added column %s/%s", path, table, name)
            arr = as_async(group[name])
            if arr.shape[0] < counts[table]:
                raise StoreError(
                    f"{path}: {table}/{name} holds {arr.shape[0]} rows, fewer than the "
                    f"{counts[table]} committed: the store is damaged"
                )
            folder = path / table / name / "c" if patchable(arr) else None
            opened[table][name] = Column(f"{table}/{name}", arr, dtype, folder, string_codecs(arr))
    return opened


def open_stacks(root: Any, path: Path, stack_counts: dict[str, int], *,
                writer: bool) -> dict[str, Stack]:
    """Every mask stack; a writer removes the stacks no commit counts (an interrupted append)."""
    stacks: dict[str, Stack] = {}
    masks = root.require_group("masks") if writer else root["masks"]
    for name in sorted(masks.group_keys()):
        try:
            labels = as_async(masks[f"{name}/labels/{LABEL_NAME}/0"])
            image = as_async(masks[f"{name}/0"])
        except KeyError:
            if name in stack_counts:
                raise StoreError(f"{path}: mask stack {name} is damaged") from None
            if writer:  # created by an append that did not commit
                logger.warning("%s: removing incomplete mask stack %s", path, name)
                del masks[name]
            continue
        stack = Stack(name, labels, image, stack_counts.get(name, 0))
        if labels.shape[0] < stack.committed:
            raise StoreError(
                f"{path}: mask stack {name} holds {labels.shape[0]} frames, fewer than "
                f"the {stack.committed} committed: the store is damaged"
            )
        stacks[name] = stack
    missing = set(stack_counts) - set(stacks)
    if missing:
        raise StoreError(f"{path}: committed mask stacks are missing: {sorted(missing)}")
    return stacks


def reopen(store: DurableLocalStore, columns: Columns, stacks: dict[str, Stack]) -> Any:
    """Every array as it is on disk, forgetting the shapes zarr staged but never landed;
    returns the root group, read again."""
    root = zarr.open_group(store=store, mode="r+", zarr_format=3)
    for table, table_columns in columns.items():
        for name, col in table_columns.items():
            col.array = as_async(root[f"{table}/{name}"])
    for stack in stacks.values():
        stack.labels = as_async(root[stack.labels_key])
        stack.image = as_async(root[f"masks/{stack.name}/0"])
    return root


def cut_stacks(stacks: dict[str, Stack]) -> list[Coroutine]:
    """Resizes that cut every mask stack back to its committed frames."""
    return [
        arr.resize((stack.committed, *arr.shape[1:]))
        for stack in stacks.values()
        for arr in (stack.labels, stack.image)
        if arr.shape[0] != stack.committed
    ]


def cut_columns(columns: Columns, counts: dict[str, int]) -> list[Coroutine]:
    """Resizes that cut every table column back to its committed rows."""
    return [
        col.array.resize((counts[table],))
        for table, table_columns in columns.items()
        for col in table_columns.values()
        if col.array is not None and col.array.shape[0] != counts[table]
    ]


def create_stack(root: Any, name: str, shape: tuple[int, int], dtype: Any,
                 pixel_size_um: float | None) -> Stack:
    """A new, empty mask stack (committed with the append that first writes into it)."""
    labels, image = create_mask_stack(root["masks"], name, shape, dtype, pixel_size_um)
    return Stack(name, as_async(labels), as_async(image), 0)
