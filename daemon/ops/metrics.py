"""Prometheus metrics of the service; every component takes the one `Metrics` it is given.

Tests build `Metrics(CollectorRegistry())` and read values back with `get_sample_value`.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from daemon.decode.names import unparsed_names

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
UNFAMILIARITY_BUCKETS = (0.5, 1, 1.5, 2, 3, 5, 10, 20)
FRACTION_BUCKETS = (0, 0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "artifactd_frames", "Frames processed, by outcome (clean or flagged).",
            ["outcome"], registry=r,
        )
        self.failed = Counter(
            "artifactd_frames_failed", "Frames that could not be processed, by reason.",
            ["reason"], registry=r,
        )
        self.dropped = Counter(
            "artifactd_frames_dropped",
            "Streamed frames dropped on purpose by the configured overload policy.",
            ["policy"], registry=r,
        )
        self.latency = Histogram(
            "artifactd_frame_latency_seconds", "From frame ready to its results durable.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference = Histogram(
            "artifactd_inference_seconds", "Model time per batch (detector and segmenter).",
            buckets=INFERENCE_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "artifactd_batch_size", "Frames per inference batch.",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "artifactd_queue_depth", "Items waiting in each pipeline stage's queue.",
            ["stage"], registry=r,
        )
        self.area_fraction = Histogram(
            "artifactd_artifact_area_fraction", "Fraction of each frame's area that is artifact.",
            buckets=FRACTION_BUCKETS, registry=r,
        )
        self.engine_info = Gauge(
            "artifactd_engine_info", "The inference engine in use (value is always 1).",
            ["backend", "model", "precision"], registry=r,
        )
        self.contamination = Gauge(
            "artifactd_contamination", "1 while a contamination alert is firing for a plate.",
            ["plate", "rule"], registry=r,
        )
        self.unfamiliarity = Histogram(
            "artifactd_frame_unfamiliarity",
            "How unlike the model's training frames each frame looks (1: as familiar as they "
            "are; above 2: unfamiliar, retraining advised).",
            buckets=UNFAMILIARITY_BUCKETS, registry=r,
        )
        self.unfamiliar_plate = Gauge(
            "artifactd_plate_unfamiliar",
            "1 once most of a plate's frames look unlike the model's training frames.",
            ["plate"], registry=r,
        )
        self.frames_seen = Counter(
            "artifactd_frames_seen", "Frames that arrived (ready on disk or received).",
            registry=r,
        )
        self.output_ok = Gauge(
            "artifactd_output_writable", "0 while the results store cannot be written.",
            registry=r,
        )
        self.output_ok.set(1)
        self.store_retries = Counter(
            "artifactd_store_retries",
            "Appends to the results store tried again after an I/O failure (disk full, "
            "permissions, a lost mount).",
            registry=r,
        )
        r.register(_UnparsedNames())
        self.duplicates = Counter(
            "artifactd_frames_duplicate",
            "Frames the store already held (a streamed frame sent again with the same id and "
            "pixels, a file replayed after a crash): answered with the stored verdict.",
            registry=r,
        )
        self.retried = Counter(
            "artifactd_frames_retried",
            "Frames tried again after a passing fault, by reason (permission, inference, "
            "postprocess).",
            ["reason"], registry=r,
        )

        self.plate_fields = Counter(
            "artifactd_plate_fields",
            "Fields of each plate in progress judged by the contamination rules, by outcome: "
            "flagged (artifacts in the sample; artifacts on the optics do not count) or clean. "
            "A plate's series go when it ends.",
            ["plate", "outcome"], registry=r,
        )
        self.typical_for_plate = Counter(
            "artifactd_frames_typical_for_plate",
            "Frames the detector scored above its threshold that were not flagged, because "
            "the score is typical of the plate's own fields (the plate-relative verdict).",
            registry=r,
        )
        self.plate_baseline = Gauge(
            "artifactd_plate_baseline_score",
            "The plate's baseline detector score (lower quartile of its recent fields); a field "
            "is flagged when it stands out from it. Set once a plate has enough fields.",
            ["plate"], registry=r,
        )
        self.stationary = Counter(
            "artifactd_artifacts_stationary",
            "Artifacts found at the same place in the field as in the fields before them, in "
            "other wells: on the optics, not in the sample (marked stationary in the store).",
            registry=r,
        )

    def serve(self, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
        """Start the /metrics HTTP listener; returns the server and its thread, to shut down."""
        if host in ("0.0.0.0", "::", ""):
            logger.warning("metrics listener bound to all interfaces (%s:%d) as configured",
                           host, port)
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        logger.info("metrics at http://%s:%d/metrics", host, server.server_port)
        return server, thread


class _UnparsedNames(Collector):
    """File names no metadata preset describes (counted where names are parsed)."""

    def collect(self):
        yield CounterMetricFamily(
            "artifactd_filenames_unparsed",
            "File names no metadata preset fully describes: plate, well and field left empty.",
            value=unparsed_names(),
        )
