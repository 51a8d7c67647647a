"""The archive, scanned once on the driver, as tasks written to a task list before any task runs.

A frame gets the identity the folder service gives it: its path relative to the ARCHIVE folder
(what `artifactd run --input ARCHIVE` watches), its size and its mtime (daemon.frames.FrameKey),
and file names are parsed by daemon.decode.names as the service parses them. So the tables equal
those of `artifactd run --once` on the same files, and a later `artifactd run` on the same folder
and store finds these frames done.

A task is one well's files (all fields, channels and planes the instrument wrote for it), or
with `fields_per_task` K, K files in plate, well and field order. Files whose names carry no
well are grouped by folder, UNPARSED_PER_TASK at a time.

The task list (`<store>.tasks.jsonl`, beside the store like its journal) holds one JSON header
line, then one line per task. `--resume` reads it instead of scanning again.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from daemon.config import Config
from daemon.decode.names import NameMeta, parse_name
from daemon.frames import FrameKey
from daemon.sources.fs import frame_files, source_name
from engines.files import replace_atomically
from engines.timestamps import timestamp

PLAN_VERSION = 1
UNPARSED_PER_TASK = 16
_WELL = re.compile(r"([A-Za-z]*)(\d*)")


class PlanError(ValueError):
    """The archive or the task list cannot be used; one sentence naming it."""


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: str  # absolute path on the driver; workers must see the archive at the same path
    source: str  # relative to its archive folder, forward slashes: the store's `source`
    size: int
    mtime_ns: int
    plate: str = ""  # as the file name says (daemon.decode.names), for the summary
    well: str = ""

    @property
    def key(self) -> FrameKey:
        return FrameKey(self.source, self.size, self.mtime_ns)


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    plate: str
    well: str  # "" for files whose names carry no well
    files: tuple[PlannedFile, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    archives: tuple[str, ...]
    fields_per_task: int
    model: str  # the model folder (or "default") the run uses
    tasks: tuple[Task, ...]
    created_at: str = ""

    @property
    def frames(self) -> int:
        return sum(len(t.files) for t in self.tasks)



def plates_and_wells(tasks: Iterable[Task]) -> tuple[set[str], set[tuple[str, str]]]:
    """The plates and the (plate, well) pairs the tasks' files belong to."""
    files = [f for task in tasks for f in task.files]
    return {f.plate for f in files}, {(f.plate, f.well) for f in files if f.well}


def plan_path(store: str | Path) -> Path:
    return Path(str(store) + ".tasks.jsonl")


def make_plan(archives: Sequence[str | Path], config: Config, *, fields_per_task: int,
              model: str) -> Plan:
    """Scan the archive folders (once) and partition their frames into tasks."""
    roots = _check_archives(archives)
    found = scan(roots, config)
    return Plan(tuple(roots), fields_per_task, model,
                tuple(partition(found, fields_per_task)), timestamp())


def scan(roots: Sequence[str], config: Config) -> list[tuple[PlannedFile, NameMeta]]:
    """Every frame file of the archive folders, with what its name says (plate, well, ...)."""
    found: list[tuple[PlannedFile, NameMeta]] = []
    owner: dict[str, str] = {}
    for root in roots:
        for path, st in frame_files(root, config.input):
            if not stat.S_ISREG(st.st_mode):
                continue
            source = source_name(os.path.relpath(path, root))
            if source in owner:
                raise PlanError(
                    f"{owner[source]} and {root} both hold {source}: frames are named by their "
                    "path inside the archive folder, so these two would be one frame in the "
                    "store; reprocess them into separate stores")
            owner[source] = root
            meta = parse_name(source, config.metadata)
            found.append((PlannedFile(os.path.abspath(path), source, st.st_size, st.st_mtime_ns,
                                      meta["plate"], meta["well"]), meta))
    return found


def partition(found: Iterable[tuple[PlannedFile, NameMeta]], fields_per_task: int) -> list[Task]:
    """Tasks in plate, well and field order: whole wells, or runs of `fields_per_task` files."""
    ordered = sorted(found, key=lambda item: _order(*item))
    if fields_per_task > 0:
        groups = [ordered[i:i + fields_per_task] for i in range(0, len(ordered), fields_per_task)]
    else:
        groups = []
        for (_plate, well, _folder), members in groupby(ordered, key=lambda item: _group(*item)):
            members = list(members)
            step = len(members) if well else UNPARSED_PER_TASK
            groups += [members[i:i + step] for i in range(0, len(members), step)]
    tasks = []
    for number, group in enumerate(groups):
        plates = {meta["plate"] for _, meta in group}
        wells = {meta["well"] for _, meta in group}
        tasks.append(Task(number, plates.pop() if len(plates) == 1 else "",
                          wells.pop() if len(wells) == 1 else "",
                          tuple(planned for planned, _ in group)))
    return tasks


def remaining(plan: Plan, is_done: Callable[[PlannedFile], bool]) -> list[Task]:
    """The plan's tasks, each with only its files not done yet; tasks left empty are dropped."""
    left = []
    for task in plan.tasks:
        files = tuple(f for f in task.files if not is_done(f))
        if files:
            left.append(Task(task.id, task.plate, task.well, files))
    return left


def write_plan(plan: Plan, path: Path) -> None:
    """The whole task list, atomically: a crash leaves the previous list or this one."""
    header = {"artifactd_tasks": PLAN_VERSION, "archives": list(plan.archives),
              "fields_per_task": plan.fields_per_task, "model": plan.model,
              "tasks": len(plan.tasks), "frames": plan.frames, "created_at": plan.created_at}

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(header) + "\n")
            for task in plan.tasks:
                fh.write(json.dumps({
                    "id": task.id, "plate": task.plate, "well": task.well,
                    "files": [[f.path, f.source, f.size, f.mtime_ns, f.plate, f.well]
                              for f in task.files],
                }) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, write)
    except OSError as exc:
        raise PlanError(f"cannot write the task list {path} ({exc}); expected a writable folder "
                        "beside the store") from None


def read_plan(path: Path) -> Plan:
    try:
        with open(path, encoding="utf-8") as fh:
            header = json.loads(fh.readline())
            if header.get("artifactd_tasks") != PLAN_VERSION:
                raise ValueError(f"not a version {PLAN_VERSION} task list")
            tasks = tuple(_task(json.loads(line)) for line in fh if line.strip())
        if len(tasks) != header["tasks"]:
            raise ValueError(f"holds {len(tasks)} tasks, its header says {header['tasks']}")
        return Plan(tuple(header["archives"]), int(header["fields_per_task"]),
                    str(header["model"]), tasks, str(header.get("created_at", "")))
    except FileNotFoundError:
        raise PlanError(f"no task list at {path}: nothing to resume there; run without --resume "
                        "and with the ARCHIVE folders") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise PlanError(f"the task list {path} cannot be read ({exc}); run again with the "
                        "ARCHIVE folders and --resume, which scans them again") from None


def _task(raw: dict) -> Task:
    files = tuple(PlannedFile(str(p), str(s), int(n), int(m), str(plate), str(well))
                  for p, s, n, m, plate, well in raw["files"])
    return Task(int(raw["id"]), str(raw["plate"]), str(raw["well"]), files)


def _check_archives(archives: Sequence[str | Path]) -> list[str]:
    if not archives:
        raise PlanError("no ARCHIVE folder given; expected one or more folders of frames")
    roots: list[str] = []
    for archive in archives:
        root = os.path.abspath(archive)
        if not os.path.isdir(root):
            raise PlanError(f"{archive}: not a folder; expected an archive folder laid out as "
                            "the instrument wrote it")
        for other in roots:
            if os.path.commonpath([root, other]) in (root, other):
                raise PlanError(f"{other} and {root}: one archive folder lies inside the other, "
                                "so its frames would be stored twice under two names; give "
                                "each folder once")
        roots.append(root)
    return roots


def _order(planned: PlannedFile, meta: NameMeta) -> tuple:
    plate, well, folder = _group(planned, meta)
    return (plate, not well, _well_order(well), folder, meta["field"], meta["channel"],
            meta["plane"], planned.source)


def _group(planned: PlannedFile, meta: NameMeta) -> tuple[str, str, str]:
    """Files of one well form a task; files with no well, their folder (in chunks)."""
    folder = "" if meta["well"] else planned.source.rpartition("/")[0]
    return meta["plate"], meta["well"], folder


def _well_order(well: str) -> tuple:
    """A01 < A02 < A10 < B01 < AA01 (1536-well plates), numbered wells by number."""
    letters, digits = _WELL.match(well).groups()  # type: ignore[union-attr]  # matches any text
    return (len(letters), letters.upper(), int(digits) if digits else -1, well)
