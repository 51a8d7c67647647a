"""The `artifactd` command line: one subcommand a task, each module adding its own options."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from engines import __version__

DESCRIPTION = """\
artifactd finds artifacts (dust, debris, fibres, bubbles, clumps) in microscope frames while
the screen is running. It watches the instrument's output folder or a ZeroMQ stream, flags each
frame, measures each artifact and writes masks and tables to a Zarr results store."""

EPILOG = """\
examples:
  artifactd run --input /data/plate7 --output plate7.zarr --once
  artifactd config > config.toml && artifactd run --config config.toml
  artifactd COMMAND --help          options and examples of one command"""

# name -> (module, one-line help, examples). A module is imported only when its command runs,
# so `artifactd run` never imports torch and a CPU install never imports TensorRT.
COMMANDS = {
    "run": ("daemon.service", "watch a folder (and/or a ZeroMQ stream) and find artifacts", [
        "artifactd run --config /etc/artifactd/config.toml        watch until stopped",
        "artifactd run --input /data/plate7 --output plate7.zarr --once   what is there, then exit",
    ]),
    "config": ("daemon.tools.config_command",
               "print the documented default config, or check a file", [
        "artifactd config > config.toml                 the defaults, to edit",
        "artifactd config /etc/artifactd/config.toml    check a file before starting",
    ]),
    "simulate": ("daemon.tools.simulate", "a fake instrument that writes a plate of frames", [
        "artifactd simulate --out /tmp/frames --rate 5 --limit 40",
        "artifactd simulate --out /tmp/frames --naming imagexpress --contaminated-wells C07",
    ]),
    "export": ("daemon.tools.export", "turn a results store into TIFF masks and CSV tables", [
        "artifactd export results.zarr --frames frames.csv --artifacts artifacts.csv",
        "artifactd export results.zarr --masks masks/",
    ]),
    "reprocess": ("daemon.tools.reprocess.command",
                  "analyse an archive again on a Dask cluster, into one store", [
        "artifactd reprocess /archive/2025 --output 2025-v2.zarr --model my_model   this machine",
        "artifactd reprocess /archive/2025 --output 2025-v2.zarr --scheduler tcp://head:8786",
        "artifactd reprocess --output 2025-v2.zarr --resume     finish an interrupted run",
    ]),
    "synth": ("engines.data.synth_cli", "write a synthetic brightfield dataset with ground truth", [
        "artifactd synth --out data --count 200 --seed 1",
        "artifactd synth --out relief --count 50 --seed 2 --renderer relief --size 512",
    ]),
    "train": ("engines.training.train", "train the detector and segmenter (weak or supervised)", [
        "artifactd train --frames data/frames --labels data/labels.csv --out my_model",
        "artifactd train --frames f --labels labels.csv --masks masks --init default --out tuned",
    ]),
    "eval": ("engines.evaluation.evaluate", "evaluate a model on frames with ground truth", [
        "artifactd eval --frames data/frames --labels data/labels.csv --masks data/masks "
        "--out eval/",
    ]),
    "engines": ("engines.gpu.build", "build and cache TensorRT engines", [
        "artifactd engines build --precision fp16 --frame-size 1080x1080",
        "artifactd engines list",
    ]),
    "bench": ("engines.evaluation.bench", "benchmark inference backends", [
        "artifactd bench --backends onnxruntime --batch-sizes 1,4 --sizes 1080x1080",
    ]),
}

# Commands whose module needs an optional extra, and the extra that brings it.
EXTRAS = {"train": "train", "eval": "train", "engines": "gpu", "reprocess": "cluster"}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their lines; every option's help ends with its default, where it has
    one the help does not already state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == ""
        shown = "default" in text.lower() or unset or action.default is argparse.SUPPRESS
        takes_value = action.option_strings or action.nargs in (argparse.OPTIONAL,
                                                                 argparse.ZERO_OR_MORE)
        return text if shown or not takes_value else text + " (default: %(default)s)"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Only the chosen command's module is imported (it alone adds its arguments)."""
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = argparse.ArgumentParser(prog="artifactd", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"artifactd {__version__}")
    add_verbose(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text, examples) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text,
                                 epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                                 formatter_class=HelpFormatter)
        command.set_defaults(_module=module)
        if name == chosen:
            load_command(name, module).add_arguments(command)
            finish(command)
    return parser


def add_verbose(parser: argparse.ArgumentParser, default: object) -> None:
    # A command's parser leaves the flag unset when it is not given, so that
    # `artifactd -v run` keeps what the top level read.
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log debug messages too")


def finish(command: argparse.ArgumentParser) -> None:
    """-v after the command as well as before it, and the same help layout in its own
    subcommands (`artifactd engines build`)."""
    add_verbose(command, default=argparse.SUPPRESS)
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                nested.formatter_class = HelpFormatter
                finish(nested)


def load_command(name: str, module: str):
    """The command's module, or one sentence saying which extra to install (never a traceback)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        ours = exc.name is None or exc.name.startswith(("daemon", "engines"))
        if EXTRAS.get(name) is None or ours:
            raise
        raise extra_needed(name, exc) from None


def extra_needed(name: str, exc: ModuleNotFoundError) -> SystemExit:
    """The one sentence that says which extra brings the module a command is missing."""
    extra = EXTRAS[name]
    hint = "pip install torch==2.13.0 first on a CPU machine, then " if extra == "train" else ""
    return SystemExit(f"artifactd {name} needs {exc.name!r}, which the {extra!r} extra "
                      f"installs: {hint}pip install 'artifactd[{extra}]'")


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
