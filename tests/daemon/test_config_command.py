"""`artifactd config`: the documented default from the installed package, and a file checked
with one sentence per problem."""

from __future__ import annotations

import os

from daemon.config import config_problems
from tests.daemon.service_helpers import REPO, installed_wheel
from tests.daemon.test_cli import artifactd

DOCUMENTED = REPO / "config.toml"


def test_the_packaged_default_is_the_documented_one():
    packaged = REPO / "daemon" / "config.toml"
    assert packaged.read_bytes() == DOCUMENTED.read_bytes(), (
        "daemon/config.toml (installed with the package) differs from config.toml: "
        "copy config.toml over daemon/config.toml")


def test_an_installed_package_prints_the_documented_default(tmp_path):
    """A wheel built from the project, unpacked away from the source tree, has the file."""
    installed = installed_wheel(tmp_path)
    done = artifactd("config", cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == DOCUMENTED.read_text()


def test_the_printed_default_checks_ok(tmp_path):
    printed = tmp_path / "config.toml"
    printed.write_text(artifactd("config").stdout)
    done = artifactd("config", str(printed))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{printed}: ok"


def test_each_problem_is_named_in_one_sentence(tmp_path):
    problems = {  # key -> its line in the file
        "input.settle_s": "settle_s = -1",
        "input.folder": "folder = 3",
        "input.colour": 'colour = "red"',
        "metrics.port": "port = 70000",
        "[nowhere]": None,
        "metadata.regex": 'regex = "(?P<wel>\\\\d+)"',
    }
    path = tmp_path / "mine.toml"
    path.write_text("\n".join([
        "[input]", problems["input.settle_s"], problems["input.folder"], problems["input.colour"],
        "recursive = false",  # a good key between bad ones is not named
        "[metrics]", problems["metrics.port"],
        "[nowhere]", "a = 1", "b = 2",
        "[metadata]", 'preset = "regex"', problems["metadata.regex"],
    ]) + "\n")
    done = artifactd("config", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(problems), done.stdout
    in_order = sorted(lines, key=lambda text: _named(text, problems))
    for key, line in zip(problems, in_order, strict=True):
        assert line.startswith(f"{path}: {key}"), line
        assert "expected" in line, f"{line}: says what is wrong, not what would be right"


def _named(line: str, problems: dict) -> int:
    return next(i for i, key in enumerate(problems) if f": {key}" in line)


def test_a_file_that_cannot_be_read_is_one_sentence(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[input\nfolder = 'x'\n")
    for path, says in ((tmp_path / "absent.toml", "config file not found"),
                       (broken, "not valid TOML"), (tmp_path, "cannot be read")):
        done = artifactd("config", str(path))
        assert done.returncode == 1
        assert done.stdout.splitlines() == [done.stdout.strip()] and says in done.stdout
        assert "Traceback" not in done.stderr


def test_keys_are_judged_beside_the_files_other_keys():
    """preset = "regex" needs a regex: the file's own, not the default (empty) one."""
    assert config_problems({"metadata": {"preset": "regex", "regex": r"(?P<well>\w+)"}}) == []
    assert len(config_problems({"metadata": {"preset": "regex"}})) == 1
