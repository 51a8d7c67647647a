"""`artifactd export`: turn a results store into TIFF masks and CSV tables.

    artifactd export results.zarr --masks masks/ --frames frames.csv --artifacts artifacts.csv

--masks DIR        one TIFF per frame at DIR/<source with its extension replaced by .tif>
                   (streamed frames: DIR/zmq/<frame id>.tif); uint8 when every label fits, else
                   uint16; the frame's height and width; 0 = background. When a file was
                   processed more than once (rewritten in place), the latest result wins.
--frames FILE      one row per frame: every column of the store's frame table, after
                   `frame_row` (the row's number, the join key) and `current` (false for a
                   result a later version of the same file replaced)
--artifacts FILE   one row per artifact: every column of the store's artifact table (its
                   `frame_row` joins it to the frame table)
--failures FILE    one row per frame that could not be processed, and why
--labels FILE      the operator's corrections from the plate page as `source,label` (clean or
                   artifact), the CSV `artifactd train --labels` reads: the latest correction
                   of the current version of each file; streamed frames have no file to train
                   on and are left out (both counts are logged)
--ome-zarr-plate OUT.zarr
                   one plate's thumbnails and artifact labels as an NGFF 0.5 HCS plate
                   (daemon.tools.hcs); --plate NAME says which when the store holds several
--history          also the replaced results (by default only current frames and their
                   artifacts are exported)

Any combination of them. Every output is written to a temporary file and renamed into
place, so a reader never sees half a file. The store may be open by a running service: export
reads the rows committed when it starts.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import tifffile
from tqdm import tqdm

from daemon.results.corrections import training_labels
from daemon.results.store import ResultsStore, StoreError, open_store_readonly
from daemon.tools.hcs import PlateExportError, export_plate
from engines.files import replace_atomically

logger = logging.getLogger(__name__)

# Columns the export adds in front of the frame table's own (which are all exported).
FRAME_ROW, CURRENT = "frame_row", "current"

_TIFF_SUFFIXES = (".ome.tiff", ".ome.tif")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ExportError(RuntimeError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE", help="the results store (a .zarr folder)")
    parser.add_argument(
        "--masks", metavar="DIR", type=Path, help="write one label TIFF per frame under DIR"
    )
    parser.add_argument(
        "--frames", metavar="FILE.csv", type=Path, help="write the frame table as CSV"
    )
    parser.add_argument(
        "--artifacts", metavar="FILE.csv", type=Path, help="write the artifact table as CSV"
    )
    parser.add_argument(
        "--failures", metavar="FILE.csv", type=Path,
        help="write the failure table (frames that could not be processed, and why) as CSV",
    )
    parser.add_argument(
        "--labels", metavar="FILE.csv", type=Path,
        help="write the plate page's corrections as source,label for `artifactd train --labels`",
    )
    parser.add_argument(
        "--ome-zarr-plate", metavar="OUT.zarr", type=Path,
        help="write a plate's thumbnails and artifact labels as an OME-Zarr (NGFF 0.5) HCS plate",
    )
    parser.add_argument(
        "--plate", metavar="NAME",
        help="the plate --ome-zarr-plate writes (needed when the store holds several)",
    )
    parser.add_argument(
        "--history", action="store_true",
        help="also export results replaced by a later version of the same file",
    )


def main(args: argparse.Namespace) -> int:
    if not (args.masks or args.frames or args.artifacts or args.failures or args.labels
            or args.ome_zarr_plate):
        print(
            "artifactd export: nothing to export: give --masks DIR, --frames FILE.csv, "
            "--artifacts FILE.csv, --failures FILE.csv, --labels FILE.csv and/or "
            "--ome-zarr-plate OUT.zarr",
            file=sys.stderr,
        )
        return 2
    if args.plate is not None and not args.ome_zarr_plate:
        print("artifactd export: --plate says which plate --ome-zarr-plate writes; expected "
              "--ome-zarr-plate OUT.zarr with it", file=sys.stderr)
        return 2
    try:
        store = open_store_readonly(args.store)
    except StoreError as exc:
        print(f"artifactd export: {exc}", file=sys.stderr)
        return 2
    try:
        if args.frames:
            n = export_frames(store, args.frames, history=args.history)
            logger.info("wrote %d frames to %s", n, args.frames)
        if args.artifacts:
            n = export_artifacts(store, args.artifacts, history=args.history)
            logger.info("wrote %d artifacts to %s", n, args.artifacts)
        if args.failures:
            n = export_failures(store, args.failures)
            logger.info("wrote %d failures to %s", n, args.failures)
        if args.masks:
            n = export_masks(store, args.masks)
            logger.info("wrote %d masks under %s", n, args.masks)
        if args.labels:
            export_labels(store, args.labels)
        if args.ome_zarr_plate:
            n = export_plate(store, args.ome_zarr_plate, args.plate)
            logger.info("wrote a plate of %d images to %s", n, args.ome_zarr_plate)
    except (OSError, StoreError, ExportError, PlateExportError) as exc:
        print(f"artifactd export: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


# ------------------------------------------------------------------------------------ masks


def mask_relpath(source: str) -> PurePosixPath | None:
    """Where a frame's mask goes under the masks folder; None for a source that would escape it.

    "plate1/A01_f1.tif" -> plate1/A01_f1.tif, "run/B02.ome.tiff" -> run/B02.tif,
    "zmq:frame-17" -> zmq/frame-17.tif
    """
    if source.startswith("zmq:"):
        name = _UNSAFE.sub("_", source[4:]) or "_"
        if name in (".", ".."):
            name = name.replace(".", "_")
        return PurePosixPath("zmq", f"{name}.tif")
    path = PurePosixPath(source.replace("\\", "/"))
    if path.is_absolute() or not path.parts or any(p in ("..", ".", "") for p in path.parts):
        return None
    name = path.name
    lower = name.lower()
    for suffix in _TIFF_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    else:
        stem, dot, _ext = name.rpartition(".")
        if dot and stem:
            name = stem
    return path.with_name(f"{name}.tif")


def mask_for_tiff(labels: np.ndarray) -> np.ndarray:
    """uint8 when every label fits, else uint16 (uint32 beyond 65535 labels)."""
    top = int(labels.max()) if labels.size else 0
    if top <= np.iinfo(np.uint8).max:
        return labels.astype(np.uint8, copy=False)
    if top <= np.iinfo(np.uint16).max:
        return labels.astype(np.uint16, copy=False)
    return labels.astype(np.uint32, copy=False)


def export_masks(store: ResultsStore, folder: Path, *, progress: bool | None = None) -> int:
    """Write one TIFF per frame; returns how many were written."""
    sources = store.frame_table()["source"]
    targets: dict[PurePosixPath, int] = {}  # later rows (newer versions of a file) win
    owners: dict[PurePosixPath, str] = {}
    for row, source in enumerate(sources):
        rel = mask_relpath(str(source))
        if rel is None:
            logger.warning("%s: skipping a source outside the input folder: %r", folder, source)
            continue
        if rel in owners and owners[rel] != source:
            logger.warning(
                "%s: %s and %s both map to %s; keeping the later one",
                folder, owners[rel], source, rel,
            )
        targets[rel] = row
        owners[rel] = str(source)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    written = 0
    for rel, row in tqdm(
        sorted(targets.items(), key=lambda item: item[1]),
        desc="masks", unit="frame", disable=(not progress) if progress is not None else None,
    ):
        path = root.joinpath(*rel.parts)
        if root not in path.resolve().parents:  # a symlinked folder pointing elsewhere
            raise ExportError(f"{path}: resolves outside {root}; refusing to write there")
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = mask_for_tiff(store.mask(row))
        replace_atomically(
            path, lambda tmp, labels=labels: tifffile.imwrite(
                tmp, labels, compression="zlib", photometric="minisblack"
            )
        )
        written += 1
    return written


# ------------------------------------------------------------------------------------ tables


def current_rows(sources: np.ndarray) -> np.ndarray:
    """True for each frame row that is the latest result of its source (a file processed again
    after it was rewritten has an older row, now replaced)."""
    latest: dict[str, int] = {}
    for row, source in enumerate(sources):
        latest[str(source)] = row
    current = np.zeros(len(sources), dtype=bool)
    current[list(latest.values())] = True
    return current


def export_frames(store: ResultsStore, path: Path, *, history: bool = False) -> int:
    table = store.frame_table()
    current = current_rows(table["source"])
    keep = slice(None) if history else current
    columns = {FRAME_ROW: np.arange(len(current))[keep], CURRENT: current[keep]}
    columns.update({name: values[keep] for name, values in table.items()})
    return _write_csv(path, columns)


def export_artifacts(store: ResultsStore, path: Path, *, history: bool = False) -> int:
    table = store.artifact_table()
    if not history:
        current = current_rows(store.frame_table()["source"])
        keep = current[table[FRAME_ROW].astype(np.int64)] if len(current) else np.zeros(0, bool)
        table = {name: values[keep] for name, values in table.items()}
    return _write_csv(path, table)


def export_failures(store: ResultsStore, path: Path) -> int:
    return _write_csv(path, store.failure_table())


def export_labels(store: ResultsStore, path: Path) -> int:
    """The corrections as the labels CSV of `artifactd train`; returns the rows written."""
    labels = training_labels(store)
    sources = np.array([source for source, _ in labels.rows], dtype=object)
    n = _write_csv(path, {"source": sources,
                          "label": np.array([label for _, label in labels.rows], dtype=object)})
    counts = {label: sum(1 for _, got in labels.rows if got == label)
              for label in ("clean", "artifact")}
    logger.info("wrote %d corrected frames to %s (%d clean, %d artifact)", n, path,
                counts["clean"], counts["artifact"])
    if labels.streamed:
        logger.warning("%d correction(s) of streamed frames left out: they have no file to "
                       "train on", labels.streamed)
    if labels.replaced:
        logger.warning("%d correction(s) left out: their file was rewritten and processed again "
                       "since, so they no longer describe what is on disk", labels.replaced)
    if n and min(counts.values()) == 0:
        only = "clean" if counts["clean"] else "artifact"
        logger.warning("%s holds only %s frames; `artifactd train` needs both classes: add "
                       "labelled frames of the other", path, only)
    return n


def _write_csv(path: Path, table: dict[str, np.ndarray]) -> int:
    columns = tuple(table)
    texts = [_as_text(table[name]) for name in columns]
    n = len(texts[0]) if texts else 0
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(zip(*texts, strict=True))

    replace_atomically(path, write)
    return n


def _as_text(values: np.ndarray) -> list[str]:
    """One column as CSV cells: NaN -> empty, booleans -> true/false, shortest float repr."""
    kind = values.dtype.kind
    if kind == "b":
        return ["true" if v else "false" for v in values]
    if kind == "f":
        text = values.astype(str)
        text[np.isnan(values)] = ""
        return text.tolist()
    if kind in "iu":
        return values.astype(str).tolist()
    return ["" if v is None else str(v) for v in values]


