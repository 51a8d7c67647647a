"""`make demo`: the real service on a simulated plate, with the shipped default model.

1. starts `artifactd run` (a subprocess, exactly as systemd would) on demo-output/frames;
2. a simulated instrument acquires a 96-well plate into that folder, two wells dirty, and a
   smudge on its optics at the same place of every field;
3. once every field is durable, the service is stopped (SIGTERM: it drains and exits 0);
4. prints the alerts it raised (the smudge: "optics", clean the light path; the dirty wells:
   contamination), a per-well summary without the artifacts on the optics, and writes a plate
   heat-map PNG.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from daemon.results.store import ResultsStore
from daemon.tools.simulate import DEFAULT_SMUDGE, SimulateOptions, plate_wells, simulate_plate

logger = logging.getLogger("artifactd.demo")

ROWS = "ABCDEFGH"
CONTAMINATED = ("C07", "F03")


def write_config(out: Path, port: int) -> Path:
    config = out / "config.toml"
    config.write_text(
        f'[input]\nfolder = "{out / "frames"}"\nsettle_s = 1.0\n\n'
        f'[output]\nstore = "{out / "results.zarr"}"\n\n'
        f'[metrics]\nport = {port}\n\n'
        "[alerts]\nplate_window = 24\nwell_flagged_fields = 2\n"
    )
    return config


def wait_until_stored(store: Path, expected: int, service: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline and service.poll() is None:
        if store.exists():
            try:
                reader = ResultsStore(store, read_only=True)
                stored = len(reader) + len(reader.failure_table()["source"])
                reader.close()
            except Exception:
                stored = 0  # the store is being created
        if stored >= expected:
            break
        time.sleep(0.5)
    return stored


def on_optics(artifacts: dict[str, np.ndarray]) -> np.ndarray:
    """Artifacts on the optics: those the service marked stationary, and the earlier ones at the
    same places (bounding boxes with IoU >= 0.5): the first sightings, stored before the service
    had seen the place often enough to say so (its alerts waited for that decision)."""
    marked = artifacts["stationary"].astype(bool)
    boxes = np.stack([artifacts[k].astype(np.int64) for k in
                      ("bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")], axis=1)
    places = np.unique(boxes[marked], axis=0) if marked.any() else np.zeros((0, 4), np.int64)
    found = marked.copy()
    for row in np.flatnonzero(~marked):
        found[row] = any(_box_iou(boxes[row], place) >= 0.5 for place in places)
    return found


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def read_tables(store: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    reader = ResultsStore(store, read_only=True)
    try:
        return reader.frame_table(), reader.artifact_table()
    finally:
        reader.close()


def sample_frames(store: Path) -> dict[str, np.ndarray]:
    """The frame table as the sample shows it: artifacts on the optics left out of each frame's
    flag, artifact count and area."""
    frames, artifacts = read_tables(store)
    optics = on_optics(artifacts)
    rows = artifacts["frame_row"].astype(np.int64)
    n_optics = np.bincount(rows[optics], minlength=len(frames["source"]))
    area_optics = np.bincount(rows[optics], weights=artifacts["area_px"][optics],
                              minlength=len(frames["source"]))
    pixels = frames["height"].astype(np.float64) * frames["width"]
    n_artifacts = frames["n_artifacts"] - n_optics
    flagged = frames["flagged"] & ((frames["n_artifacts"] == 0) | (n_artifacts > 0))
    return {**frames, "flagged": flagged, "n_artifacts": n_artifacts, "optics": n_optics,
            "area_fraction": np.maximum(0.0, frames["area_fraction"] - area_optics / pixels)}


def well_summary(table: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    wells: dict[str, dict[str, float]] = {}
    columns = (table["well"], table["flagged"], table["area_fraction"], table["n_artifacts"])
    for well, flagged, fraction, count in zip(*columns, strict=True):
        entry = wells.setdefault(str(well),
                                 {"fields": 0, "flagged": 0, "area": 0.0, "artifacts": 0})
        entry["fields"] += 1
        entry["flagged"] += int(flagged)
        entry["area"] += float(fraction)
        entry["artifacts"] += int(count)
    for entry in wells.values():
        entry["area"] /= entry["fields"]
    return wells


def agreement(table: dict[str, np.ndarray], truth_csv: Path) -> str:
    """How the flags (without the optics) compare with what the simulator drew in the sample."""
    import csv

    flagged = {str(s) for s, f in zip(table["source"], table["flagged"], strict=True) if f}
    with truth_csv.open(newline="") as handle:
        dirty = {row["source"] for row in csv.DictReader(handle) if row["label"] == "artifact"}
    return (f"the simulator drew artifacts in {len(dirty)} fields: {len(dirty & flagged)} of them "
            f"flagged, {len(dirty - flagged)} missed; {len(flagged - dirty)} clean fields flagged")


def alerts_raised(log: Path) -> list[str]:
    """The service's alert lines (fired and resolved), in order."""
    lines = log.read_text(errors="replace").splitlines()
    marker = " daemon.sinks.alerts: "
    return [line.split(marker, 1)[1] for line in lines if marker in line]


def print_optics(table: dict[str, np.ndarray]) -> None:
    seen = int((table["optics"] > 0).sum())
    print(f"\ndirt on the optics: an artifact at the same place in {seen} of "
          f"{len(table['source'])} fields; left out of the plate map, the heat-map and the "
          "contamination alerts")


def print_plate(wells: dict[str, dict[str, float]]) -> None:
    print("\nflagged fields per well, artifacts on the optics left out (. = none flagged):")
    print("     " + " ".join(f"{c:>3d}" for c in range(1, 13)))
    for row in ROWS:
        cells = []
        for column in range(1, 13):
            entry = wells.get(f"{row}{column:02d}")
            flagged = entry["flagged"] if entry else 0
            cells.append(f"{int(flagged):>3d}" if flagged else "  .")
        print(f"  {row}  " + " ".join(cells))
    dirty = sorted(w for w, e in wells.items() if e["flagged"])
    print("\nwells with flagged fields:")
    for well in dirty:
        e = wells[well]
        print(f"  {well}: {int(e['flagged'])}/{int(e['fields'])} fields flagged, "
              f"{int(e['artifacts'])} artifacts, mean artifact area {100 * e['area']:.2f}%")


def heat_map(wells: dict[str, dict[str, float]], path: Path) -> None:
    try:
        import matplotlib
    except ModuleNotFoundError:  # the service does not need it; the picture is the plots extra
        print(f"(no {path.name}: install the plots extra for it: pip install 'artifactd[plots]')")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.full((8, 12), np.nan)
    for well, entry in wells.items():
        grid[ROWS.index(well[0]), int(well[1:]) - 1] = 100 * entry["area"]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    image = axes.imshow(grid, cmap="magma_r", vmin=0)
    axes.set_xticks(range(12), [str(c) for c in range(1, 13)])
    axes.set_yticks(range(8), list(ROWS))
    for well, entry in wells.items():
        if entry["flagged"]:
            axes.text(int(well[1:]) - 1, ROWS.index(well[0]), str(int(entry["flagged"])),
                      ha="center", va="center", color="cyan", fontsize=9, weight="bold")
    axes.set_title("artifact area per well (% of field, not the optics); number = flagged fields")
    figure.colorbar(image, ax=axes, label="mean artifact area (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--fields", type=int, default=2, help="fields per well")
    parser.add_argument("--size", type=int, default=1080, help="frame height and width")
    parser.add_argument("--port", type=int, default=9750, help="metrics port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "frames").mkdir(parents=True)
    config = write_config(args.out.resolve(), args.port)
    log = (args.out / "service.log").open("wb")
    service = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT)
    expected = len(plate_wells(96)) * args.fields
    print(f"service started (pid {service.pid}); metrics at http://127.0.0.1:{args.port}/metrics, "
          "live plate page at http://127.0.0.1:9753/")
    print(f"acquiring a 96-well plate, {args.fields} fields per well, {args.size}x{args.size} "
          f"uint16; dirty wells: {', '.join(CONTAMINATED)}; a smudge on the optics in every field")
    started = time.monotonic()
    simulate_plate(args.out / "frames", SimulateOptions(
        rate=0, plate=96, fields=args.fields, size=args.size, seed=2026,
        contaminated_wells=CONTAMINATED, artifact_probability=0.03, plate_name="DemoPlate",
        truth=args.out / "truth.csv", smudge=DEFAULT_SMUDGE,
    ))
    stored = wait_until_stored(args.out / "results.zarr", expected, service, timeout=600)
    elapsed = time.monotonic() - started
    try:
        snapshot = urllib.request.urlopen(f"http://127.0.0.1:{args.port}/metrics", timeout=5).read()
        (args.out / "metrics.txt").write_bytes(snapshot)
    except OSError as exc:
        logger.warning("could not read the metrics: %s", exc)
    service.send_signal(signal.SIGTERM)
    code = service.wait(120)
    log.close()
    if stored < expected or code != 0:
        print(f"demo failed: {stored}/{expected} frames stored, service exit {code}; "
              f"see {args.out / 'service.log'}")
        return 1
    print("\nalerts raised:")
    for line in alerts_raised(args.out / "service.log"):
        print(f"  {line}")
    table = sample_frames(args.out / "results.zarr")
    print_optics(table)
    wells = well_summary(table)
    print_plate(wells)
    print("\n" + agreement(table, args.out / "truth.csv"))
    heat_map(wells, args.out / "plate.png")
    print(f"\n{expected} fields in {elapsed:.0f} s ({expected / elapsed:.1f} frames/s, acquisition "
          "and analysis sharing this machine)")
    print(f"results store : {args.out / 'results.zarr'}  (open the masks in napari, tables via "
          "`artifactd export`)")
    print(f"plate heat-map: {args.out / 'plate.png'}")
    print(f"metrics       : {args.out / 'metrics.txt'} (a snapshot; live at "
          f":{args.port}/metrics while running)")
    print(f"service log   : {args.out / 'service.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
