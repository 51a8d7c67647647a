"""Writing files that someone else reads: never let them see a half-written one.

Every file artifactd writes for a reader (a model card, an evaluation table, an engine plan, an
export, a task list) goes through `replace_atomically`, so a reader finds either the old file
or the complete new one, and after a power cut the new one is either there whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then make it `path`, durably.

    The steps, each needed for the guarantee:

    1. the temporary file is in `path`'s own folder, so the rename never crosses filesystems;
    2. after `write` returns (having closed its handle, which flushes Python's buffer), the
       file is fsynced, so its data is on disk before its name is;
    3. os.replace swaps it in: a reader sees the old file or the new one, never a mix;
    4. the folder is fsynced, so the rename itself survives a crash (where the filesystem
       allows it: `sync_folder_entry`).

    The temporary name starts with a dot (artifactd's folder watcher ignores it) and carries
    the process id and a random part, so two writers, processes or threads, never share one. It
    is created by `write` with the usual permissions (umask), not a private mode, so a service
    user can read the result. On any failure the temporary file is removed and `path` is left
    as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder_entry(path.parent)


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, and `folder` itself: its contents are on
    disk before a rename makes the folder visible."""
    for root, _, names in os.walk(folder):
        for name in names:
            _fsync(Path(root) / name)
        sync_folder_entry(Path(root))


def sync_folder_entry(folder: Path) -> None:
    """fsync a folder, so renames in it survive a crash. Some network and FUSE filesystems
    refuse fsync on a folder; there the data is already as safe as that filesystem allows, and
    the write has succeeded, so that refusal is not an error."""
    with contextlib.suppress(OSError):
        _fsync(folder, directory=True)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """`replace_atomically` for bytes already in memory."""
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomically(path: Path, text: str) -> None:
    """`replace_atomically` for UTF-8 text already in memory."""
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _fsync(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
