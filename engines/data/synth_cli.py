"""`artifactd synth`: write a synthetic brightfield dataset with ground truth masks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engines.data.synth import DTYPES, PLATE_RENDERERS, RENDERERS, SynthOptions, write_dataset

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to create (must be empty)")
    parser.add_argument("--count", type=int, required=True, help="number of frames")
    parser.add_argument(
        "--seed", type=int, required=True, help="dataset seed (frames are reproducible)"
    )
    parser.add_argument("--size", type=int, default=1080, help="frame height and width in px")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="uint16", help="pixel type of the frames"
    )
    parser.add_argument(
        "--artifact-probability", type=float, default=0.5, help="chance a frame holds artifacts"
    )
    parser.add_argument(
        "--pixel-size", type=float, default=None, metavar="UM",
        help="um per px; default: drawn per frame (halo: 0.3-1.0, the others: 0.3-1.3)",
    )
    parser.add_argument("--renderer", choices=tuple(RENDERERS), default="halo",
                        help="how images are formed: halo (round cells with halos), wave (wave "
                             "optics), monolayer (procedural intensity layers), relief (a "
                             "height field under oblique light), caustic (ray optics) or particle "
                             "(particle clouds as defocused shadows); all but halo draw adherent "
                             "cells")
    parser.add_argument("--channels", type=int, default=1, help="defocused copies as (C, H, W)")
    parser.add_argument("--planes", type=int, default=1, help="a z-stack as (Z, H, W)")
    parser.add_argument("--plate-seed", type=int, default=None, metavar="N",
                        help="frames of one plate, as in a real screen: one kind of cells, "
                             "stain, pixel size and optics (drawn from N) in every frame; "
                             f"renderers {', '.join(PLATE_RENDERERS)}. Default: each frame "
                             "draws its own")


def main(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(
            f"artifactd synth: {out} exists and is not an empty folder; choose a new --out",
            file=sys.stderr,
        )
        return 2
    if args.count < 0:
        print(f"artifactd synth: --count must be >= 0, got {args.count}", file=sys.stderr)
        return 2
    if args.plate_seed is not None and args.renderer not in PLATE_RENDERERS:
        expected = f"{', '.join(PLATE_RENDERERS[:-1])} or {PLATE_RENDERERS[-1]}"
        print(f"artifactd synth: --plate-seed: the {args.renderer} renderer draws each frame's "
              f"cells and optics itself; expected --renderer {expected}", file=sys.stderr)
        return 2
    try:
        options = SynthOptions(
            height=args.size,
            width=args.size,
            pixel_size_um=args.pixel_size,
            dtype=args.dtype,
            artifact_probability=args.artifact_probability,
            channels=args.channels,
            planes=args.planes,
            plate_seed=args.plate_seed,
        )
    except ValueError as exc:
        print(f"artifactd synth: {exc}", file=sys.stderr)
        return 2
    try:
        write_dataset(out, args.count, args.seed, options, progress=sys.stderr.isatty(),
                      renderer_name=args.renderer)
    except ValueError as exc:  # e.g. channels > 1 where a renderer draws one channel
        print(f"artifactd synth: {exc}", file=sys.stderr)
        return 2
    return 0
