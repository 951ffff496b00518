"""Prometheus metrics of the workers and the API: what an operator watches, nothing about a person.

No biometric data and no job ids: labels are the job kind, the status, the result code, the
stage and the queue, each from a small fixed set, so the series stay few.

A worker host serves one port from its prefork parent. Each pool child counts its own jobs;
prometheus-client's multiprocess mode (one memory-mapped file per process in a directory,
summed by the parent at scrape time) is chosen over an aggregating side process (a push
gateway, a sidecar) because it needs nothing else running and survives a child's restart by
the pool. The mode is fixed when ``prometheus_client`` is first imported, so this module imports
it only inside functions, and a worker calls :func:`serve_worker` before any metric is built.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import Settings

# prometheus-client reads its multiprocess directory from this variable (its interface, not ours).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("queue", "fetch", "compute", "store")
# Per-stage seconds: from a match's sub-millisecond compute to a slow S3 fetch or a long queue.
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Metrics:
    """The process's metric objects (prometheus-client types)."""

    jobs: Any  # Counter kyc_jobs_total{kind,status,code}
    stage_seconds: Any  # Histogram kyc_job_stage_seconds{kind,stage}
    batch_size: Any  # Histogram kyc_batch_size{kind}
    model_info: Any  # Gauge kyc_model_info{detector,embedder,engine,version} = 1
    probe_near_duplicates: Any  # Counter kyc_probe_near_duplicates_total{kind}


_lock = threading.Lock()
_metrics: Metrics | None = None


def metrics() -> Metrics:
    """The metric objects, built on first use (after :func:`serve_worker` chose the mode)."""
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import Counter, Gauge, Histogram

            _metrics = Metrics(
                jobs=Counter("kyc_jobs", "Terminal jobs", ["kind", "status", "code"]),
                stage_seconds=Histogram(
                    "kyc_job_stage_seconds", "Seconds per job stage", ["kind", "stage"], buckets=STAGE_BUCKETS_S
                ),
                batch_size=Histogram("kyc_batch_size", "Jobs per batched execution", ["kind"], buckets=BATCH_BUCKETS),
                model_info=Gauge(
                    "kyc_model_info",
                    "The models and inference engine in use (value 1)",
                    ["detector", "embedder", "engine", "version"],
                    multiprocess_mode="max",
                ),
                probe_near_duplicates=Counter(
                    "kyc_probe_near_duplicates",
                    "Searches whose probe nearly repeats one of the tenant's last (per worker process)",
                    ["kind"],
                ),
            )
        return _metrics


def observe_job(kind: str, status: str, code: str, timings: dict[str, float], store_s: float | None = None) -> None:
    """Count one terminal job and observe its stage latencies.

    Args:
        kind: the job kind.
        status: ``succeeded`` or ``failed``.
        code: the answer's code (``SUCCESS``, ``NO_FACE``...) or the error's.
        timings: the document's ``queue_s``, ``fetch_s``, ``compute_s`` (those present).
        store_s: seconds spent writing the terminal document.
    """
    found = metrics()
    found.jobs.labels(kind, status, code).inc()
    seconds = {stage: timings.get(f"{stage}_s") for stage in STAGES[:3]} | {"store": store_s}
    for stage, value in seconds.items():
        if value is not None:
            found.stage_seconds.labels(kind, stage).observe(value)


def observe_batch(kind: str, size: int) -> None:
    """Record how many jobs one batched execution took (for the batched worker path)."""
    metrics().batch_size.labels(kind).observe(size)


def set_model_info(settings: Settings) -> None:
    """Publish the configured detector, embedder and inference engine as ``kyc_model_info``."""
    import onnxruntime

    metrics().model_info.labels(
        settings.detector_model, settings.embedding_model, "onnxruntime", onnxruntime.__version__
    ).set(1)


class QueueDepthCollector:
    """``kyc_queue_depth{queue}``: messages waiting on each broker queue, read at scrape time.

    Args:
        client: the broker's Redis.
        queues: the queue names (kombu keeps each as a Redis list of that name).
    """

    def __init__(self, client: Any, queues: Iterable[str]) -> None:
        self.client = client
        self.queues = tuple(queues)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("kyc_queue_depth", "Messages waiting on the broker queue", labels=["queue"])
        try:
            pipe = self.client.pipeline(transaction=False)
            for queue in self.queues:
                pipe.llen(queue)
            depths = pipe.execute()
        except Exception:  # the broker is down: no sample rather than a failed scrape
            depths = []
        for queue, depth in zip(self.queues, depths, strict=False):
            family.add_metric([queue], float(depth))
        yield family


def prepare_multiprocess(settings: Settings) -> Path:
    """Point prometheus-client at an empty multiprocess directory; call before any metric exists.

    Returns:
        The directory (``KYC_METRICS_DIR``, emptied, or a new temporary one).
    """
    directory = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="kyc-metrics-"))
    # Files of a previous run would be summed into this one's counters.
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def serve_worker(settings: Settings, broker: Any, queues: Iterable[str]) -> None:
    """Serve the host's metrics on ``KYC_METRICS_PORT``: every pool process's, summed, plus the
    queue depths. Call in the worker's parent, before the pool forks."""
    prepare_multiprocess(settings)
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(QueueDepthCollector(broker, queues))
    set_model_info(settings)
    start_http_server(int(settings.metrics_port or 0), registry=registry)


def child_exited(pid: int) -> None:
    """Drop a dead pool process's live gauges (its counters stay in the sum)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class ApiMetrics:
    """The API's own registry: submissions by kind and the queue depths.

    Args:
        broker: the broker's Redis (for the queue depths).
        queues: the queue names.
    """

    def __init__(self, broker: Any, queues: Iterable[str]) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self.registry.register(QueueDepthCollector(broker, queues))
        self.submitted = Counter("kyc_api_jobs_submitted", "Jobs submitted through the API", ["kind"],
                                 registry=self.registry)  # fmt: skip
        # Refusals (429) by reason, and searches whose probe nearly repeats one of the same key's
        # last few (a hill-climb or a rebuild probing around one face): counts only.
        self.refused = Counter("kyc_api_jobs_refused", "Job requests refused over a quota or cap", ["kind", "reason"],
                               registry=self.registry)  # fmt: skip
        self.probe_near_duplicates = Counter(
            "kyc_api_probe_near_duplicates", "Search probes near-duplicating a recent probe of the same key",
            registry=self.registry,
        )  # fmt: skip

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
