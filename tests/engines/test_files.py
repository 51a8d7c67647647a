"""Files written for a reader appear whole or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from engines.files import replace_atomically, write_bytes_atomically, write_text_atomically


def test_the_new_file_replaces_the_old_one_and_no_temporary_file_is_left(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text("old")
    write_text_atomically(path, "new\n")
    write_bytes_atomically(tmp_path / "plan.bin", b"\x00\x01")
    assert path.read_text() == "new\n"
    assert (tmp_path / "plan.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "plan.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "MODEL_CARD.md"
    path.write_text("old")

    def write(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(path, write)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["MODEL_CARD.md"]


def test_the_temporary_file_is_hidden_beside_the_target_and_unique(tmp_path):
    seen = []
    for _ in range(2):
        replace_atomically(tmp_path / "a.csv", lambda tmp: (seen.append(tmp), tmp.write_text("x")))
    assert all(tmp.parent == tmp_path and tmp.name.startswith(".a.csv.") for tmp in seen)
    assert seen[0] != seen[1]


def test_the_file_is_readable_by_others_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomically(tmp_path / "eval.md", "table\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "eval.md").stat().st_mode) == 0o644
