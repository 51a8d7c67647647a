"""Build `artifactd train` argument namespaces the way the command line does."""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.training.train import add_arguments


def train_args(
    data: Path, out: Path, *, mode: str, extra: tuple[str, ...] = ()
) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--frames", str(data / "frames"), "--labels", str(data / "labels.csv"),
            "--masks", str(data / "masks"), "--out", str(out), "--mode", mode,
            "--detector-steps", "2", "--segmenter-steps", "2", "--batch-size", "2",
            "--crop", "64", "--val-fraction", "0.34", *extra]
    return parser.parse_args(argv)
