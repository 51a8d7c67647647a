"""`artifactd reprocess ARCHIVE... --output STORE`: a new model over old screens, on Dask.

The steps, in the order that makes "done" trustworthy: check the options and folders (nothing
is created for a mistyped one), scan the archive once and write the task list, open the store
and its journal (the service's), leave out what is done, and only then start or reach the
cluster. At the end a summary: plates, wells, frames, flagged, failures, wall time.

Exit status: 0 when every frame is done; 1 when some are left to process again (named in the
log: `--resume` processes them); 2 for bad options; 130 when stopped by a signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon.config import Config, ConfigError, load_config
from daemon.decode.names import check_regex
from daemon.frames import file_identity
from daemon.tools.reprocess.plan import (
    Plan,
    PlanError,
    make_plan,
    plan_path,
    plates_and_wells,
    read_plan,
    remaining,
    write_plan,
)
from engines.runtime.modelcard import ModelBundle, ModelError, load_model

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Config().reprocess
    parser.add_argument("archives", nargs="*", type=Path, metavar="ARCHIVE",
                        help="folders of frames as the instrument wrote them (each is what "
                        "`artifactd run --input` would watch); with --resume, optional")
    parser.add_argument("--output", type=Path, required=True, metavar="STORE",
                        help="results store to write (its journal and task list lie beside it)")
    parser.add_argument("--scheduler", default=None,
                        help="local (one worker process per core), local:N, or tcp://HOST:8786 "
                        f"of a running Dask scheduler (default: reprocess.scheduler, "
                        f"{defaults.scheduler})")
    parser.add_argument("--model", default=None,
                        help="model folder, or 'default' (default: model.path); every worker "
                        "must see it at the same path")
    parser.add_argument("--fields-per-task", type=int, default=None, metavar="K",
                        help="K fields per task instead of one well per task (default: "
                        f"reprocess.fields_per_task, {defaults.fields_per_task} = whole wells)")
    parser.add_argument("--retries", type=int, default=None,
                        help="times a task that raises is run again (default: reprocess.retries, "
                        f"{defaults.retries})")
    parser.add_argument("--resume", action="store_true",
                        help="continue into STORE after an interrupted run: only what is not "
                        "done (with no ARCHIVE, the task list of that run; with ARCHIVE, a new "
                        "scan)")
    parser.add_argument("--config", type=Path,
                        help="TOML config: metadata, input patterns, model and post-processing "
                        "as for `artifactd run` (default: built-in defaults)")


@dataclass(frozen=True, slots=True)
class Settings:
    config: Config
    model: str
    fields_per_task: int


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        from daemon.tools.reprocess import driver
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("dask", "distributed", "tqdm"):
            raise
        from daemon.cli import extra_needed

        raise extra_needed("reprocess", exc) from None
    if not args.verbose:  # Dask's own start-up and shutdown lines, unless asked for
        logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        settings, plan, bundle = prepare(args)
    except (ConfigError, PlanError, ModelError) as exc:
        logger.error("%s", exc)
        return 2
    return Run(settings, plan, bundle, started).execute(driver)


def prepare(args: argparse.Namespace) -> tuple[Settings, Plan, ModelBundle]:
    """The run's settings, its model and its task list (written before anything runs)."""
    config = load_config(args.config)
    changes = {name: value for name, value in (
        ("scheduler", args.scheduler), ("fields_per_task", args.fields_per_task),
        ("retries", args.retries)) if value is not None}
    config = config.with_section("reprocess", **changes)
    config = config.with_section("output", store=str(args.output), journal=config.output.journal)
    check_regex(config.metadata)
    path = plan_path(args.output)
    previous = None
    if not args.resume:
        _refuse_earlier_results(args.output, path, config.output.journal_path())
    elif not args.archives or path.exists():
        previous = _previous_plan(path, rescan=bool(args.archives))
    model = _model_name(args.model or (previous.model if previous else config.model.path))
    if previous is not None and model != previous.model:
        raise PlanError(f"{args.output} was reprocessed with model {previous.model}; --resume "
                        f"continues with that model (got {model}); give a new --output for a "
                        "new model")
    fields = config.reprocess.fields_per_task
    if previous is not None and args.fields_per_task is None:
        fields = previous.fields_per_task
    settings = Settings(config.with_section("model", path=model), model, fields)
    bundle = load_model(model)
    if previous is not None and not args.archives:
        return settings, previous, bundle
    plan = make_plan(args.archives, settings.config, fields_per_task=fields, model=model)
    write_plan(plan, path)
    logger.info("task list %s: %d frame(s) in %d task(s)", path, plan.frames, len(plan.tasks))
    return settings, plan, bundle


def _model_name(model: str) -> str:
    """"default", or the model folder as an absolute path (workers start elsewhere)."""
    return model if model == "default" else os.path.abspath(model)


def _previous_plan(path: Path, *, rescan: bool) -> Plan | None:
    """The task list of the run to resume; a damaged one is no loss when the archive is
    scanned again."""
    try:
        return read_plan(path)
    except PlanError as exc:
        if not rescan:
            raise
        logger.warning("%s; scanning the archive again", exc)
        return None


def _refuse_earlier_results(store: Path, tasks: Path, journal: Path) -> None:
    """A run without --resume starts an output of its own: it never mixes into earlier results."""
    if tasks.exists():
        raise PlanError(f"{store}: an earlier reprocess run wrote here (task list {tasks}); add "
                        "--resume to finish it, or give a new --output")
    if journal.exists() or (store.exists() and (not store.is_dir() or any(store.iterdir()))):
        raise PlanError(f"{store}: already holds results (or its journal {journal} exists); "
                        "give a new --output, or add --resume to add to it what is not done")


class Run:
    """The store and journal, what is left to do, the cluster, the summary."""

    def __init__(self, settings: Settings, plan: Plan, bundle: ModelBundle, started: float) -> None:
        self.settings = settings
        self.plan = plan
        self.bundle = bundle
        self.started = started

    def execute(self, driver) -> int:
        from daemon.pipeline.analysis import Analysis
        from daemon.pipeline.plate_verdict import PlateVerdict
        from daemon.results.journal import Journal, JournalError
        from daemon.results.store import ResultsStore, StoreError
        from daemon.tools.reprocess.committer import Committer

        config = self.settings.config
        try:
            store = ResultsStore(config.output.store, attributes={
                "models": {"id": self.bundle.model_id, "card": asdict(self.bundle.card)},
                "config": asdict(config),
            })
        except StoreError as exc:
            logger.error("%s; expected a writable --output", exc)
            return 1
        try:
            journal = Journal(config.output.journal_path())
        except JournalError as exc:
            store.close()
            logger.error("%s", exc)
            return 1
        try:
            analysis = Analysis.for_model(config, self.bundle)
            committer = Committer(store, journal,
                                  PlateVerdict.for_store(config.model, analysis, store))
            tasks, before = self._left_to_do(store, journal)
            if not tasks:
                self._summary(committer.tally, before, None)
                return 0
            return self._on_cluster(driver, committer, tasks, before)
        finally:
            journal.close()
            store.close()

    def _left_to_do(self, store, journal) -> tuple[list, int]:
        """Tasks with their files not done. A file the store holds but the journal does not
        (the driver died between the two) is journaled now, with its stored verdict."""
        done = journal.done_keys()
        held = [f for t in self.plan.tasks for f in t.files
                if f.key not in done and store.has(file_identity(f.key))]
        if held:
            verdicts = store.stored_verdicts([file_identity(f.key) for f in held])
            for outcome in ("clean", "flagged"):
                keys = [f.key for f in held if bool(verdicts.get(file_identity(f.key), {})
                                                    .get("flagged")) == (outcome == "flagged")]
                journal.commit(keys, outcome)
            logger.info("%d frame(s) were in the store but not journaled (the last run stopped "
                        "between the two); journaled now", len(held))
            done |= {f.key for f in held}
        tasks = remaining(self.plan, lambda f: f.key in done)
        before = self.plan.frames - sum(len(t.files) for t in tasks)
        if before:
            logger.info("%d of %d frame(s) are done already; %d left in %d task(s)", before,
                        self.plan.frames, self.plan.frames - before, len(tasks))
        return tasks, before

    def _on_cluster(self, driver, committer, tasks: list, before: int) -> int:
        config = self.settings.config
        options = driver.RunOptions(config.reprocess.scheduler, config.reprocess.retries,
                                    config.reprocess.tasks_per_worker)
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with driver.connect(options.scheduler) as (client, where):
                logger.info("reprocess: %d frame(s) in %d task(s) on %s", sum(
                    len(t.files) for t in tasks), len(tasks), where)
                run = driver.Driver(client, committer, options)
                _stop_on_signals(run.stop)
                run.process(tasks, config, self.settings.model)
                self._summary(committer.tally, before, run, where)
                if run.abandoned:
                    logger.error("stopped: no worker could open the model (%s); fix it and run "
                                 "`artifactd reprocess --output %s --resume`", run.abandoned,
                                 config.output.store)
                    return 1
                if run.stop.is_set():
                    logger.error("stopped by a signal with %d task(s) not committed; "
                                 "`artifactd reprocess --output %s --resume` does the rest",
                                 run.left, config.output.store)
                    return 130
        except driver.DriverError as exc:
            logger.error("%s", exc)
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        tally = committer.tally
        if tally.not_done_count:
            logger.error("%d frame(s) failed for a reason that is not the file's and are not "
                         "done; `artifactd reprocess --output %s --resume` processes them again: "
                         "%s", tally.not_done_count, config.output.store,
                         ", ".join(tally.not_done[:20]))
            return 1
        return 0

    def _summary(self, tally, before: int, run, where: str = "") -> None:
        """The command's answer, printed whatever the log level."""
        wall = time.monotonic() - self.started
        plates, wells = plates_and_wells(run.committed if run is not None else [])
        failed = ", ".join(f"{n} {reason}" for reason, n in sorted(tally.failed.items())) or "none"
        print(f"reprocess: {len(plates)} plate(s), {len(wells)} well(s), {tally.frames} frame(s) "
              f"processed ({tally.stored} stored, {tally.already} already stored), "
              f"{tally.flagged} flagged, failed: {failed}; {before} done before; "
              f"{wall:.1f} s wall, {tally.frames / wall if wall else 0:.1f} frames/s; "
              f"results in {self.settings.config.output.store}", flush=True)
        if run is None:
            return
        timings = run.timings
        engines = sum(timings.engines.values())
        rate = tally.frames / run.took if run.took else 0.0
        print(f"reprocess: {len(timings.runs)} task(s) done on {where} in {run.took:.1f} s "
              f"({rate:.1f} frames/s): {len(timings.engines)} "
              f"worker(s) opened {engines} model engine(s) in all, kept between tasks; "
              f"{timings.raised} task attempt(s) raised (retried up to "
              f"{run.options.retries} time(s)); coordination: {timings.overhead()}; "
              f"committer: {tally.appends} append(s), {tally.commit_s:.2f} s", flush=True)


def _stop_on_signals(stop) -> None:
    """First SIGINT/SIGTERM: stop handing out tasks and leave (what is committed stays; the
    rest is for --resume). A second one exits at once: the store and journal are consistent
    at every instant."""
    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        logger.info("%s: stopping; what is committed stays", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
