"""`artifactd --help` and each command's: written for users, every option explained with its
default, an example per command, and -v accepted before or after the command."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from daemon.cli import COMMANDS, HelpFormatter, build_parser
from tests.daemon.service_helpers import REPO


def artifactd(*argv: str, cwd=REPO, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def command_parser(name: str) -> argparse.ArgumentParser:
    return subparsers(build_parser([name]))[name]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def every_parser(name: str) -> dict[str, argparse.ArgumentParser]:
    """A command's parser and those of its own subcommands (`engines build`)."""
    found, todo = {}, [(name, command_parser(name))]
    while todo:
        path, parser = todo.pop()
        found[path] = parser
        todo += [(f"{path} {sub}", p) for sub, p in subparsers(parser).items()]
    return found


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help_that_shows_its_default(name):
    for path, parser in every_parser(name).items():
        formatter = HelpFormatter(prog=path)
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"artifactd {path} {'/'.join(action.option_strings) or action.dest}"
            assert (action.help or "").strip(), f"{where} has no help"
            default = action.default
            if default not in (None, "", argparse.SUPPRESS) and not isinstance(default, bool):
                shown = formatter._get_help_string(action) % {"default": default}
                assert "default" in shown and str(default) in shown, f"{where}: default not shown"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_examples_that_parse(name):
    parser = build_parser([name])
    epilog = command_parser(name).epilog or ""
    examples = [line.split("   ")[0].split() for line in epilog.splitlines()
                if line.strip().startswith(f"artifactd {name}")]
    assert examples, f"artifactd {name} --help shows no example"
    for words in examples:
        parser.parse_args(words[1 : _end(words)])  # an example that does not parse exits here


def _end(words: list[str]) -> int:
    """Where an example's own command ends (before a shell redirection or a second command)."""
    return next((i for i, w in enumerate(words) if w in (">", "&&", "|")), len(words))


def test_the_top_level_help_speaks_to_users():
    done = artifactd("--help")
    assert done.returncode == 0, done.stderr
    assert "add_arguments" not in done.stdout and "main()" not in done.stdout
    assert "microscope" in done.stdout
    for name in COMMANDS:
        assert f"\n    {name} " in done.stdout, f"{name} is not listed"
    assert "examples:" in done.stdout


def test_verbose_is_taken_before_or_after_the_command():
    for argv, verbose in ((["run", "-v"], True), (["-v", "run"], True), (["run"], False),
                          (["engines", "list", "--verbose"], True)):
        assert build_parser(argv).parse_args(argv).verbose is verbose, argv
    done = artifactd("run", "-v", "--help")
    assert done.returncode == 0, done.stderr
    assert "--verbose" in done.stdout and "examples:" in done.stdout
    done = artifactd("config", "-v")  # a real command run with the flag after it
    assert done.returncode == 0, done.stderr
    assert done.stdout == (REPO / "config.toml").read_text()
