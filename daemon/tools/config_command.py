"""`artifactd config`: print the documented default configuration, or check a config file.

The default is the `config.toml` installed with the package (`daemon/config.toml`, a copy of
the one at the top of the source tree: a test keeps them identical), so a plain
`pip install artifactd` has it too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from daemon.config import ConfigError, config_problems, parse_config, read_toml
from daemon.decode.names import check_regex

logger = logging.getLogger(__name__)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", type=Path,
        help="config file to check: each problem is named in one line and the exit status is "
             "1; a valid file prints 'ok'. Without it the documented default config is printed")


def main(args: argparse.Namespace) -> int:
    if args.file is None:
        sys.stdout.write(default_config_text())
        return 0
    problems = file_problems(args.file)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"{args.file}: ok")
    return 0


def default_config_text() -> str:
    """The documented default config, every key with its default and what it does."""
    return resources.files("daemon").joinpath("config.toml").read_text(encoding="utf-8")


def file_problems(path: Path) -> list[str]:
    """One sentence per problem of the file at `path`, each starting with its path."""
    try:
        raw = read_toml(path)
    except ConfigError as exc:
        return [str(exc)]  # the sentence names the file already
    problems = config_problems(raw)
    try:  # what the service also checks at start-up, outside the config's own rules
        check_regex(parse_config({"metadata": raw.get("metadata", {})}).metadata)
    except ConfigError as exc:
        problems += [] if str(exc) in problems else [str(exc)]
    return [f"{path}: {problem}" for problem in problems]
