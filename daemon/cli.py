"""`artifactd` command line: one subcommand per module, each with add_arguments() and main()."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from engines import __version__

# name -> (module, one-line help). A module is imported only when its command runs, so
# `artifactd run` never imports torch and a CPU install never imports TensorRT.
COMMANDS = {
    "run": ("daemon.service", "watch a folder (and/or a ZeroMQ stream) and find artifacts"),
    "simulate": ("daemon.simulate", "a fake instrument that writes a plate of frames"),
    "export": ("daemon.export", "turn a results store into TIFF masks and CSV tables"),
    "synth": ("engines.synth_cli", "write a synthetic brightfield dataset with ground truth"),
    "train": ("engines.train", "train the detector and segmenter (weak or supervised)"),
    "eval": ("engines.evaluate", "evaluate a model on frames with ground truth"),
    "engines": ("engines.build", "build and cache TensorRT engines"),
    "bench": ("engines.bench", "benchmark inference backends"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Only the chosen command's module is imported (it alone adds its arguments)."""
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = argparse.ArgumentParser(prog="artifactd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"artifactd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        if name == chosen:
            load_command(name, module).add_arguments(command)
    return parser


# Commands whose module needs an optional extra, and the extra that brings it.
EXTRAS = {"train": "train", "eval": "train", "engines": "gpu"}


def load_command(name: str, module: str):
    """The command's module, or one sentence saying which extra to install (never a traceback)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(name)
        if extra is None or exc.name is None or exc.name.startswith(("daemon", "engines")):
            raise
        hint = "pip install torch==2.13.0 first on a CPU machine, then " if extra == "train" else ""
        raise SystemExit(f"artifactd {name} needs {exc.name!r}, which the {extra!r} extra "
                         f"installs: {hint}pip install 'artifactd[{extra}]'") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(load_command(args.command, args._module).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
