"""`artifactd run`: the service. Wires config, engine, store, journal, sources and sinks.

Start-up order makes "done" trustworthy: the store and journal open first (a store that
cannot be written stops start-up with its path), then the engine, the pipeline, the sinks,
and only then the sources, which begin with the backlog already on disk.

SIGTERM/SIGINT: stop intake, drain every queue, flush the store, commit the journal, exit 0
(within service.drain_timeout_s). A second signal exits at once; the journal and the store
are consistent at every instant (each commit is atomic), so nothing is lost or duplicated:
what was not committed is processed on the next start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

from daemon.config import Config, ConfigError, load_config
from daemon.decode.names import check_regex
from daemon.decode.tiff import DecodeOptions
from daemon.ops.metrics import Metrics
from daemon.ops.notify import SystemdNotifier
from daemon.pipeline.analysis import Analysis
from daemon.pipeline.plate_verdict import PlateVerdict
from daemon.pipeline.stages import Pipeline, PipelineParts
from daemon.sinks.optics import OpticsTracker
from daemon.sinks.unfamiliar import UnfamiliarPlates
from daemon.sources.base import Source
from engines.runtime.modelcard import ModelError, load_model

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML config (default: built-in defaults)")
    parser.add_argument("--input", type=Path, help="folder to watch (overrides input.folder)")
    parser.add_argument("--output", type=Path, help="results store (overrides output.store)")
    parser.add_argument("--once", action="store_true",
                        help="process what is in the input folder, print a summary and exit: 0 "
                        "when every file is done, 1 when some are left to process again (named in "
                        "the log)")
    parser.add_argument("--metrics-port", type=int,
                        help="overrides metrics.port (0: any free port)")
    parser.add_argument("--web-port", type=int, help="overrides web.port (0: any free port)")


def main(args: argparse.Namespace) -> int:
    try:
        config = configure(args)
    except ConfigError as exc:
        logger.error("invalid configuration: %s", exc)
        return 2
    if not args.verbose:
        logging.getLogger().setLevel(config.service.log_level)
    try:
        service = Service(config, once=args.once)
    except (ConfigError, ModelError) as exc:
        logger.error("%s", exc)
        return 2
    except StartupError as exc:
        logger.error("%s", exc)
        return 1
    return service.run()


def configure(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.input is not None:
        config = config.with_section("input", folder=str(args.input))
    if args.output is not None:
        config = config.with_section("output", store=str(args.output),
                                     journal=config.output.journal)
    if args.metrics_port is not None:
        config = config.with_section("metrics", port=args.metrics_port)
    if getattr(args, "web_port", None) is not None:
        config = config.with_section("web", port=args.web_port)
    check_regex(config.metadata)
    check_input(config)
    return config


def check_input(config: Config) -> None:
    """A folder to watch must exist before anything (store, journal) is created for it."""
    folder = config.input.folder
    if folder and not Path(folder).is_dir():
        raise ConfigError(f"input.folder: {folder} is not a folder; expected an existing folder "
                          "to watch")


class StartupError(RuntimeError):
    """Something outside the config stops start-up (output not writable, port taken)."""


def recorded_config(config: Config) -> dict:
    """The config as the store records it: the web tokens' names, never the tokens."""
    recorded = asdict(config)
    recorded["web"]["tokens"] = [entry.partition(":")[0] + ":(not recorded)"
                                 for entry in config.web.tokens]
    return recorded


class Service:
    def __init__(self, config: Config, *, once: bool = False) -> None:
        from daemon.results.journal import Journal
        from daemon.results.store import ResultsStore, StoreError
        from engines.select import create_engines

        self.config = config
        self.once = once
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.notifier = SystemdNotifier()
        self.stop_requested = threading.Event()
        self._closers: list = []
        bundle = load_model(config.model.path)
        try:
            self.store = ResultsStore(config.output.store, attributes={
                "models": {"id": bundle.model_id, "card": asdict(bundle.card)},
                "config": recorded_config(config),
            })
        except StoreError as exc:
            raise StartupError(f"{exc}; expected a writable output.store") from None
        self._closers.append(self.store.close)
        self.journal = Journal(config.output.journal_path())
        self._closers.append(self.journal.close)
        self.summary = self._plate_summary()
        engines = create_engines(
            bundle, workers=config.pipeline.engine_workers, backend=config.model.backend,
            precision=config.model.precision, threads=config.model.threads,
            max_batch=config.pipeline.max_batch,
            engine_cache=Path(config.model.engine_cache) if config.model.engine_cache else None,
        )
        self._closers.extend(engine.close for engine in engines)
        info = engines[0].info
        self.engine = {"backend": info.backend, "device": info.device, "model": info.model,
                       "precision": info.precision, "workers": len(engines)}
        self.metrics.engine_info.labels(info.backend, info.model, info.precision).set(1)
        self.optics = OpticsTracker(config.optics) if config.optics.enabled else None
        analysis = Analysis.for_model(config, bundle)
        self._ticks: list = []  # called about once a second from the main loop
        logger.info("engine: %s on %s, model %s, %s; %d side by side", info.backend, info.device,
                    info.model, info.precision, len(engines))
        self.pipeline = Pipeline(
            PipelineParts(
                engines=engines, store=self.store, journal=self.journal, metrics=self.metrics,
                decode=DecodeOptions.from_config(config.input, config.metadata,
                                                 in_channels=bundle.card.in_channels),
                analysis=analysis,
                sinks=self._sinks(),
                mark_stationary=self.optics.mark if self.optics is not None else None,
                judge=PlateVerdict.for_store(config.model, analysis, self.store, self.metrics),
                thumbnail_downsample=(config.thumbnails.downsample
                                      if config.thumbnails.enabled else 0),
            ),
            config.pipeline,
        )
        self.sources: list[Source] = []
        self.page = None

    def _plate_summary(self):
        """The plate page's summary, with what the store already holds; None when off."""
        if not self.config.web.enabled:
            return None
        from daemon.web.summary import PlateSummary

        started = time.monotonic()
        summary = PlateSummary(self.config.web.plate_format)
        n = summary.load(self.store)
        if n:
            logger.info("plate page: %d stored frames read in %.1f s", n,
                        time.monotonic() - started)
        return summary

    def page_status(self) -> dict:
        """What the plate page shows beside the map, besides the summary's own figures."""
        return {
            "backlog": self.pipeline.in_flight,
            "failures": dict.copy(self.pipeline.tally.failed),  # one C call: safe across threads
            "engine": self.engine,
            "store_writable": self.pipeline.store_healthy.is_set(),
        }

    def _sinks(self) -> tuple:
        sinks = []
        alert_sinks = []
        if self.config.verdicts.enabled:
            from daemon.sinks.verdicts import VerdictPublisher

            publisher = VerdictPublisher(self.config.verdicts)
            self._closers.append(publisher.close)
            sinks.append(publisher.publish)
            alert_sinks.append(publisher.publish_alert)
        if self.config.alerts.webhook_url:
            from daemon.sinks.webhook import WebhookNotifier

            webhook = WebhookNotifier(self.config.alerts)
            webhook.start()
            self._closers.append(lambda: (webhook.stop(), webhook.join()))
            alert_sinks.append(webhook.notify)
        if self.summary is not None:
            sinks.append(self.summary.sink(self.store))
            alert_sinks.append(self.summary.alert)
        sinks.append(UnfamiliarPlates(self.metrics))
        if self.config.alerts.enabled:
            from daemon.sinks.alerts import ContaminationMonitor

            monitor = ContaminationMonitor(self.config.alerts, self.metrics, alert_sinks,
                                           optics_fields=self.config.optics.fields)
            if self.optics is None:
                sinks.append(lambda results, _latencies: monitor.observe(results))
            else:
                from daemon.sinks.alert_hold import HeldAlerts

                held = HeldAlerts(monitor, self.optics)
                sinks.append(held.observe)
                self._ticks.append(held.tick)
                # Closed before the alert sinks above (closers run in reverse): fields still
                # waiting for the optics decision are judged, and their alerts sent, first.
                self._closers.append(held.flush)
        return tuple(sinks)

    # ---------------------------------------------------------------- running

    def run(self) -> int:
        self._install_signals()
        server = None
        try:
            if self.config.metrics.enabled:
                server, thread = self.metrics.serve(self.config.metrics.host,
                                                    self.config.metrics.port)
            self._start_page()
            self.pipeline.start()
            self._start_sources()
            self.notifier.ready()
            self.notifier.status("processing")
            self._wait()
        except (ConfigError, OSError) as exc:
            logger.error("cannot start: %s", exc)
            self.stop_requested.set()
            self._shutdown()
            return 1
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
                thread.join()
        return self._shutdown()

    def _start_page(self) -> None:
        if self.summary is None:
            return
        from daemon.web.server import PlatePage

        page = PlatePage(self.config.web, self.summary, self.store, self.page_status)
        page.start()
        self.page = page
        # Closed before the store: its requests read thumbnails and write corrections.
        self._closers.append(page.stop)

    def _start_sources(self) -> None:
        if self.config.input.folder:
            from daemon.sources.fs import FolderSource

            folder = FolderSource(self.config.input, self.pipeline.submit_file,
                                  is_done=self.journal.is_done)
            folder.start()
            self.sources.append(folder)
        if self.config.zmq.enabled and not self.once:
            from daemon.sources.zmq import ZmqSource

            stream = ZmqSource(self.config.zmq, self.pipeline.submit_frame, self.metrics)
            stream.start()
            self.sources.append(stream)

    def _wait(self) -> None:
        interval = self.notifier.watchdog_interval() or 1.0
        stalled = False
        while not self.stop_requested.wait(min(interval, 1.0)):
            stalled = self._watchdog(stalled)
            for tick in self._ticks:
                try:
                    tick()
                except Exception:
                    logger.exception("a periodic task failed; the service goes on")
            if self.once and self._backlog_finished():
                break

    def _watchdog(self, stalled: bool) -> bool:
        """Ping systemd's watchdog only while frames become durable (or none wait): a hung
        stage, or a store that stays unwritable, gets the service restarted. True while stalled."""
        waited = self.pipeline.seconds_since_progress()
        if waited < self.config.service.stall_timeout_s:
            if stalled:
                logger.info("frames are becoming durable again; watchdog pings resumed")
            self.notifier.watchdog()
            return False
        if not stalled:
            logger.error("no frame has become durable for %.0f s while %d wait (service."
                         "stall_timeout_s); watchdog pings stopped, so systemd restarts the "
                         "service", waited, self.pipeline.in_flight)
        return True

    def _backlog_finished(self) -> bool:
        return all(s.backlog_done for s in self.sources) and self.pipeline.in_flight == 0

    def _not_handed_on(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for source in self.sources:
            found.update(source.not_handed_on)
        return found

    def _once_summary(self) -> int:
        """`--once`: what was done, and 1 when any file is left to process again."""
        tally = self.pipeline.tally
        failed = ", ".join(f"{n} {reason}" for reason, n in sorted(tally.failed.items())) or "none"
        processed = tally.clean + tally.flagged
        # The command's answer, printed whatever the log level.
        print(f"{processed} frame(s) processed, {tally.flagged} flagged, failed: {failed}; "
              f"{time.monotonic() - self.started:.1f} s; results in {self.config.output.store}",
              flush=True)
        left = self._not_handed_on()
        for path, why in list(left.items())[:20]:
            logger.error("--once: %s was not processed (%s); it stays on disk, not done", path, why)
        if tally.not_done_count:
            logger.error("--once: %d frame(s) failed for a passing reason and are not done; the "
                         "next run processes them again: %s", tally.not_done_count,
                         ", ".join(tally.not_done[:20]))
        return 1 if left or tally.not_done_count else 0

    def _shutdown(self) -> int:
        self.notifier.stopping()
        started = time.monotonic()
        for source in self.sources:
            source.stop()
            source.join()  # what a source still holds reaches the pipeline before the drain
        drained = self.pipeline.drain(self.config.service.drain_timeout_s)
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                logger.exception("error while closing")
        logger.info("stopped after %.1f s drain (%s)", time.monotonic() - started,
                    "complete" if drained else "incomplete: the rest is processed on next start")
        if self.once:
            return max(self._once_summary(), 0 if drained else 1)
        return 0 if drained else 1

    def _install_signals(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            if self.stop_requested.is_set():
                # Every commit is atomic, so exiting mid-way keeps the journal consistent.
                os._exit(128 + signum)
            logger.info("%s: stopping intake and draining", signal.Signals(signum).name)
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
