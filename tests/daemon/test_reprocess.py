"""`artifactd reprocess` on real Dask clusters: a LocalCluster of worker processes, a `dask
scheduler` with `dask worker` subprocesses, a worker and the driver SIGKILLed mid-run, a corrupt
file and a model the workers cannot open. Every run is the real command in a subprocess; the
store, the journal and `artifactd run --once` are the real ones.

The archive is two simulated plates (daemon/tools/simulate.py) of three wells x two fields,
256 x 256 uint16, so a run takes seconds; one LocalCluster is shared by the tests that connect to a
running cluster (each test writes its own store).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.config import Config, ConfigError
from daemon.results.store import open_store_readonly
from daemon.tools.reprocess.plan import (
    UNPARSED_PER_TASK,
    PlanError,
    make_plan,
    plan_path,
    read_plan,
    write_plan,
)
from daemon.tools.simulate import SimulateOptions, simulate_plate
from tests.daemon.service_helpers import REPO, config_file, run_once, wait_for

FRAMES = 12  # 2 plates x 3 wells x 2 fields
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Two plates written as an Operetta writes them; well A02 of each is contaminated."""
    root = tmp_path_factory.mktemp("archive")
    for seed, plate in enumerate(("PlateA", "PlateB")):
        simulate_plate(root, SimulateOptions(rate=0, fields=2, size=256, limit=6, seed=seed,
                                             plate_name=plate, contaminated_wells=("A02",)))
    assert len(list(root.rglob("*.tiff"))) == FRAMES
    return root


@pytest.fixture(scope="module")
def settings(tmp_path_factory, archive) -> Path:
    """The segmenter on every frame, so the tables hold artifact rows to compare."""
    folder = tmp_path_factory.mktemp("config")
    return config_file(folder, input_dir=archive, store=folder / "unused.zarr",
                       model={"segment": "all"})


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster of two worker processes, shared by the tests that connect to one."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as local:
        yield local.scheduler_address


# ---------------------------------------------------------------------------------- helpers


def reprocess(*argv: str, log: Path, env: dict | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    with log.open("ab") as handle:
        return subprocess.run([sys.executable, "-m", "daemon.cli", "reprocess", *argv], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=handle, env=env or ENV,
                              timeout=timeout, text=True)


def start_reprocess(*argv: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "reprocess", *argv], cwd=REPO,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=ENV)


def tables(store: Path) -> tuple[dict, dict, dict]:
    """Frame rows, artifact rows and masks, each keyed by the frame's identity."""
    reader = open_store_readonly(store)
    try:
        frames, artifacts = reader.frame_table(), reader.artifact_table()
        identities = [str(i) for i in frames["identity"]]
        assert len(identities) == len(set(identities)), "a frame is stored twice"
        rows = {identity: {name: values[i] for name, values in frames.items()
                           # reprocess stores no thumbnails (the live page's pictures)
                           if name not in ("processed_at", "mask_index", "thumbnail_stack",
                                           "thumbnail_index")}
                for i, identity in enumerate(identities)}
        found: dict[str, list[tuple]] = {}
        for i, identity in enumerate(artifacts["identity"]):
            found.setdefault(str(identity), []).append(tuple(
                values[i] for name, values in artifacts.items() if name != "frame_row"))
        masks = {identity: reader.mask(i) for i, identity in enumerate(identities)}
        return rows, found, masks
    finally:
        reader.close()


def failures(store: Path) -> list[tuple[str, str, str]]:
    reader = open_store_readonly(store)
    try:
        table = reader.failure_table()
        return list(zip(table["source"], table["reason"], table["message"], strict=True))
    finally:
        reader.close()


def journal(store: Path) -> dict[str, str]:
    """source -> outcome of every done file version."""
    with sqlite3.connect(str(store) + ".journal.sqlite") as db:
        return dict(db.execute("SELECT source, outcome FROM done"))


def committed_frames(store: Path) -> int:
    """The store's committed count, as a reader sees it (its root zarr.json)."""
    try:
        return json.loads((store / "zarr.json").read_text())["attributes"]["committed"]["frames"]
    except (OSError, ValueError, KeyError):
        return 0


def assert_every_frame_once(store: Path, archive: Path) -> None:
    rows, _, _ = tables(store)
    expected = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*.tiff"))
    assert sorted(str(r["source"]) for r in rows.values()) == expected
    assert sorted(journal(store)) == expected


def summary(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("reprocess:")]
    assert lines, f"no summary in {result.stdout!r}"
    return "\n".join(lines)


def dask_command(name: str) -> list[str]:
    """The `dask` command of this environment (`dask scheduler`, `dask worker`)."""
    found = Path(sys.executable).with_name("dask")
    return [str(found if found.exists() else shutil.which("dask") or "dask"), name]


# ---------------------------------------------------------------------------------- the plan


def test_one_task_per_well_or_per_k_fields_in_plate_order(archive, tmp_path):
    config = Config()
    plan = make_plan([archive], config, fields_per_task=0, model="default")
    assert [(t.plate, t.well) for t in plan.tasks] == [
        (p, w) for p in ("PlateA", "PlateB") for w in ("A01", "A02", "A03")]
    for task in plan.tasks:
        assert [f.source.split("/")[1][6:9] for f in task.files] == ["f01", "f02"]
        assert {(f.plate, f.well) for f in task.files} == {(task.plate, task.well)}
    by_five = make_plan([archive], config, fields_per_task=5, model="default")
    assert [len(t.files) for t in by_five.tasks] == [5, 5, 2]
    assert [f for t in by_five.tasks for f in t.files] == [f for t in plan.tasks for f in t.files]

    path = plan_path(tmp_path / "out.zarr")
    write_plan(plan, path)
    assert read_plan(path) == plan


def test_files_without_a_well_are_grouped_by_folder(tmp_path):
    folder = tmp_path / "odd" / "run1"
    folder.mkdir(parents=True)
    for i in range(UNPARSED_PER_TASK + 3):
        (folder / f"image{i:03d}.tif").write_bytes(b"not read while planning")
    (folder / ".hidden.tif").write_bytes(b"")
    (folder / "partial.tif.part").write_bytes(b"")
    plan = make_plan([tmp_path / "odd"], Config(), fields_per_task=0, model="default")
    assert [len(t.files) for t in plan.tasks] == [UNPARSED_PER_TASK, 3]
    assert all(t.well == "" and f.source.startswith("run1/") for t in plan.tasks for f in t.files)


def test_archives_that_would_share_names_are_refused(tmp_path, archive):
    copy = tmp_path / "copy"
    shutil.copytree(archive, copy)
    with pytest.raises(PlanError, match=r"both hold Plate[AB]/"):
        make_plan([archive, copy], Config(), fields_per_task=0, model="default")
    with pytest.raises(PlanError, match="inside the other"):
        make_plan([archive, archive / "PlateA"], Config(), fields_per_task=0, model="default")
    with pytest.raises(PlanError, match="not a folder"):
        make_plan([tmp_path / "nowhere"], Config(), fields_per_task=0, model="default")


@pytest.mark.parametrize(("raw", "named"), [
    ({"scheduler": "local:0"}, "reprocess.scheduler"),
    ({"scheduler": "http://head:8786"}, "reprocess.scheduler"),
    ({"fields_per_task": -1}, "reprocess.fields_per_task"),
    ({"retries": -2}, "reprocess.retries"),
    ({"tasks_per_worker": 0}, "reprocess.tasks_per_worker"),
])
def test_invalid_reprocess_settings_name_their_key(raw, named):
    from daemon.config import parse_config

    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config({"reprocess": raw})


# ---------------------------------------------------------------------------------- the command


@pytest.mark.parametrize(("argv", "expected"), [
    (["{tmp}/nowhere"], "not a folder; expected an archive folder"),
    (["{archive}", "--scheduler", "udp://x:1"], "reprocess.scheduler (--scheduler): expected"),
    (["{archive}", "--fields-per-task", "-3"], "reprocess.fields_per_task: expected a number"),
    (["--resume"], "no task list at"),
    (["{archive}", "--model", "{tmp}/no-model"], "no-model"),
])
def test_bad_options_are_one_sentence_and_create_nothing(argv, expected, archive, tmp_path):
    store = tmp_path / "out.zarr"
    argv = [a.format(tmp=tmp_path, archive=archive) for a in argv]
    result = reprocess(*argv, "--output", str(store), log=tmp_path / "log")
    text = (tmp_path / "log").read_text()
    assert result.returncode == 2, text
    assert expected in text and "Traceback" not in text
    assert len([line for line in text.splitlines() if " ERROR " in line]) == 1, text
    assert not store.exists() and not plan_path(store).exists()


def test_without_dask_it_says_which_extra_to_install(tmp_path, archive):
    blocked = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = None; "
               "from daemon.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", blocked, "reprocess", str(archive), "--output",
                             str(tmp_path / "out.zarr")], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "artifactd reprocess needs 'dask', which the 'cluster' extra installs: "
        "pip install 'artifactd[cluster]'"]
    assert not (tmp_path / "out.zarr").exists()


def test_the_service_never_imports_dask():
    probe = ("import sys; from daemon.cli import build_parser; build_parser(['run']); "
             "import daemon.service, daemon.pipeline.stages, daemon.results.store; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------- real clusters


def test_local_cluster_gives_the_tables_of_run_once_and_run_finds_them_done(
        archive, settings, tmp_path):
    store, once = tmp_path / "reprocessed.zarr", tmp_path / "once.zarr"
    log, out = tmp_path / "log", tmp_path / "stdout"
    with out.open("w") as handle:
        driver = subprocess.Popen([sys.executable, "-m", "daemon.cli", "reprocess", str(archive),
                                   "--output", str(store), "--scheduler", "local:2", "--config",
                                   str(settings)], cwd=REPO, stdout=handle,
                                  stderr=log.open("ab"), env=ENV)
        seen = set()  # what a reader finds committed while the run goes on
        while driver.poll() is None:
            seen.add(committed_frames(store))
            time.sleep(0.005)
    assert driver.returncode == 0, log.read_text()
    # Each append holds whole tasks (wells of 2 fields): a reader never sees half a well.
    assert all(n % 2 == 0 for n in seen), seen
    said = summary(subprocess.CompletedProcess([], 0, out.read_text()))
    assert "2 plate(s), 6 well(s), 12 frame(s) processed (12 stored" in said
    # The model is loaded once per worker and kept: 2 engines for 6 tasks on 2 workers.
    assert "6 task(s) done on a local cluster of 2 worker process(es) in " in said, said
    assert "frames/s): 2 worker(s) opened 2 model engine(s)" in said, said
    assert "coordination: " in said and "ms median between a worker thread's tasks" in said

    config = config_file(tmp_path, input_dir=archive, store=once, model={"segment": "all"})
    assert run_once(config, log).returncode == 0, log.read_text()
    rows, artifacts, masks = tables(store)
    rows_once, artifacts_once, masks_once = tables(once)
    assert rows.keys() == rows_once.keys() and len(rows) == FRAMES
    for identity, row in rows.items():
        for name, value in row.items():
            assert value == rows_once[identity][name] or (
                isinstance(value, float) and np.isnan(value) and np.isnan(rows_once[identity][name])
            ), (identity, name, value, rows_once[identity][name])
        assert np.array_equal(masks[identity], masks_once[identity]), identity
    assert artifacts == artifacts_once
    assert sum(len(a) for a in artifacts.values()) > 0, "no artifact rows to compare"
    assert any(r["flagged"] for r in rows.values()) and not all(r["flagged"] for r in rows.values())
    assert_every_frame_once(store, archive)

    # The service on the same folder and store: every frame is done already.
    again = config_file(tmp_path, input_dir=archive, store=store, model={"segment": "all"})
    before = (store / "zarr.json").read_bytes()
    with log.open("ab") as handle:
        done = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--config", str(again),
                               "--once"], cwd=REPO, stdout=subprocess.PIPE, stderr=handle,
                              text=True, timeout=120)
    assert done.returncode == 0, log.read_text()
    assert done.stdout.startswith("0 frame(s) processed"), done.stdout
    assert committed_frames(store) == FRAMES
    assert json.loads(before)["attributes"]["committed"] == \
        json.loads((store / "zarr.json").read_text())["attributes"]["committed"]


def test_a_worker_killed_mid_run_has_its_work_redone_and_nothing_is_stored_twice(
        archive, settings, tmp_path):
    from distributed import Client

    log = tmp_path / "log"
    handle = log.open("ab")
    address_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([*dask_command("scheduler"), "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", ":0", "--scheduler-file",
                                  str(address_file)], stdout=handle, stderr=subprocess.STDOUT,
                                 env=ENV, cwd=tmp_path)
    workers: list[subprocess.Popen] = []
    try:
        wait_for(address_file.exists, 60, "the scheduler's address file")
        address = json.loads(address_file.read_text())["address"]
        workers = [subprocess.Popen([*dask_command("worker"), address, "--nthreads", "1",
                                     "--no-nanny", "--name", f"w{i}", "--dashboard-address",
                                     ":0"], stdout=handle, stderr=subprocess.STDOUT, env=ENV,
                                    cwd=tmp_path) for i in range(2)]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            names = {info["name"]: addr for addr, info in
                     client.scheduler_info()["workers"].items()}
            victim = names["w0"]
            store = tmp_path / "out.zarr"
            driver = start_reprocess(str(archive), "--output", str(store), "--scheduler", address,
                                     "--config", str(settings), "--fields-per-task", "1",
                                     log=log)
            # SIGKILL the worker once it holds one of the run's tasks, before that task is done.
            held: list[str] = []

            def victim_busy() -> bool:
                held[:] = [str(k) for k in client.processing([victim]).get(victim, ())
                           if "artifactd-reprocess" in str(k)]
                return bool(held)

            wait_for(victim_busy, 60, "a task on the worker to kill", interval=0.005)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
            assert committed_frames(store) < FRAMES
            assert driver.wait(120) == 0, log.read_text()
        assert_every_frame_once(store, archive)
        assert committed_frames(store) == FRAMES
        rows, _, _ = tables(store)
        task_frames = read_plan(plan_path(store)).tasks
        killed = {int(k.rsplit("-", 1)[1]) for k in held}
        for task in task_frames:
            if task.id in killed:  # what the dead worker held was stored, once
                assert {f.source for f in task.files} <= {str(r["source"]) for r in rows.values()}
        assert failures(store) == []
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*workers, scheduler]:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        handle.close()


def test_the_driver_killed_mid_run_then_resume_stores_every_frame_once(
        archive, settings, cluster, tmp_path):
    store, log = tmp_path / "out.zarr", tmp_path / "log"
    driver = start_reprocess(str(archive), "--output", str(store), "--scheduler", cluster,
                             "--config", str(settings), "--fields-per-task", "1", log=log)
    wait_for(lambda: committed_frames(store) > 0 or driver.poll() is not None, 120,
             "the first committed frames", interval=0.002)
    driver.send_signal(signal.SIGKILL)
    assert driver.wait(30) == -signal.SIGKILL
    at_kill = committed_frames(store)
    assert 0 < at_kill < FRAMES, f"the driver was not killed mid-run ({at_kill} committed)"

    result = reprocess("--output", str(store), "--scheduler", cluster, "--resume", log=log)
    assert result.returncode == 0, log.read_text()
    said = summary(result)
    # Everything the store held is done (journaled then, if the kill came between the two),
    # and only the rest was computed and stored.
    done_before = int(said.split(" done before")[0].rsplit(" ", 1)[1])
    assert at_kill <= done_before < FRAMES
    assert f"({FRAMES - done_before} stored, 0 already stored)" in said
    assert_every_frame_once(store, archive)
    assert committed_frames(store) == FRAMES


def test_resume_journals_what_the_store_holds_without_computing_it_again(
        archive, settings, cluster, tmp_path):
    store, log = tmp_path / "out.zarr", tmp_path / "log"
    assert reprocess(str(archive), "--output", str(store), "--scheduler", cluster, "--config",
                     str(settings), log=log).returncode == 0, log.read_text()
    # What a crash between the store's append and the journal's commit leaves behind.
    with sqlite3.connect(str(store) + ".journal.sqlite") as db:
        db.execute("DELETE FROM done WHERE source LIKE 'PlateB/%'")
    assert len(journal(store)) == FRAMES // 2
    outcomes = tables(store)[0]

    result = reprocess("--output", str(store), "--scheduler", cluster, "--resume", log=log)
    assert result.returncode == 0, log.read_text()
    assert "0 frame(s) processed" in summary(result) and f"{FRAMES} done before" in summary(result)
    assert "were in the store but not journaled" in log.read_text()
    assert_every_frame_once(store, archive)
    flagged = {str(r["source"]): bool(r["flagged"]) for r in outcomes.values()}
    assert journal(store) == {s: "flagged" if f else "clean" for s, f in flagged.items()}


def test_a_corrupt_file_is_one_failure_row_and_the_rest_is_done(archive, cluster, tmp_path):
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    good = copy / "PlateA" / "r01c01f01p01-ch1sk1fk1fl1.tiff"
    bad = copy / "PlateA" / "r01c04f01p01-ch1sk1fk1fl1.tiff"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # cut off mid-write
    store, log = tmp_path / "out.zarr", tmp_path / "log"
    result = reprocess(str(copy), "--output", str(store), "--scheduler", cluster, log=log)
    assert result.returncode == 0, log.read_text()
    rows = failures(store)
    assert len(rows) == 1, rows
    source, reason, message = rows[0]
    assert (source, reason) == ("PlateA/r01c04f01p01-ch1sk1fk1fl1.tiff", "truncated")
    assert str(bad) in message
    assert committed_frames(store) == FRAMES
    assert journal(store)[source] == "failed:truncated"
    assert len(journal(store)) == FRAMES + 1
    assert "failed: 1 truncated" in summary(result)

    again = reprocess("--output", str(store), "--scheduler", cluster, "--resume", log=log)
    assert again.returncode == 0 and f"{FRAMES + 1} done before" in summary(again)
    assert len(failures(store)) == 1


def test_a_task_that_raises_is_retried_then_recorded_and_resume_redoes_it(
        archive, cluster, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(REPO / "engines" / "weights" / "default", model)
    detector = model / "detector.onnx"
    weights = detector.read_bytes()
    detector.write_bytes(b"not an ONNX model")  # the copy the workers see is damaged
    store, log = tmp_path / "out.zarr", tmp_path / "log"
    result = reprocess(str(archive), "--output", str(store), "--scheduler", cluster, "--model",
                       str(model), "--retries", "1", log=log)
    text = log.read_text()
    assert result.returncode == 1, text
    rows = failures(store)
    assert rows and {reason for _, reason, _ in rows} == {"model"}
    assert all("cannot be opened on worker" in message and "failed 2 time(s)" in message
               for _, _, message in rows), rows
    failed_tasks = len(rows) // 2  # two fields per task
    raised = int(summary(result).split(" task attempt(s) raised")[0].rsplit(" ", 1)[1])
    assert raised >= 2 * failed_tasks  # each failed task: its first try and its retry
    assert "stopped: no worker could open the model" in text
    assert journal(store) == {}  # not the files' fault: nothing is marked done
    assert committed_frames(store) == 0

    detector.write_bytes(weights)  # repaired in place: --resume does it all
    again = reprocess("--output", str(store), "--scheduler", cluster, "--resume", log=log)
    assert again.returncode == 0, log.read_text()
    assert_every_frame_once(store, archive)
