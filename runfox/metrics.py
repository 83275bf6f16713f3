"""Prometheus metrics for workers (``runfox worker --metrics-port``) and other servers.

``WorkerMetrics(backend)`` owns a private ``prometheus_client`` registry with:

==========================================  ==========  =============================
metric                                      type        labels / source
==========================================  ==========  =============================
``runfox_steps_completed_total``            counter     ``fn``: attempts that succeeded
``runfox_steps_failed_total``               counter     ``fn``, ``error_type``
``runfox_step_duration_seconds``            histogram   ``fn``: time in the executor
``runfox_worker_lost_total``                counter     ``fn``: re-delivered jobs (a
                                                        lease ran out) reported lost
``runfox_queue_depth``                      gauge       ``Runner.queue_depth()`` at
                                                        scrape time
``runfox_workers_alive``                    gauge       live rows of the store's worker
                                                        registry at scrape time
==========================================  ==========  =============================

The counters are this process's (Prometheus sums them over workers); the two
gauges read the backend when scraped, so any one scraped process reports them
for the whole backend (a failed read reports ``NaN``). ``serve(port)`` starts
``prometheus_client``'s HTTP server on a daemon thread; ``serve_metrics(backend,
port)`` does both, for a dashboard that has no worker of its own.

``prometheus-client`` is optional (``pip install 'runfox[metrics]'``) and imported
only here, when metrics are asked for.

OpenTelemetry spans per step are not implemented (the ``[otel]`` extra of issue
11 is left for later).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from .errors import BackendError

if TYPE_CHECKING:
    from .backend.base import Backend

__all__ = ["WorkerMetrics", "serve_metrics"]

_MISSING = ("metrics need prometheus-client: pip install 'runfox[metrics]' "
            "(or prometheus-client)")


def _client() -> Any:
    try:
        import prometheus_client
    except ModuleNotFoundError as exc:
        if exc.name != "prometheus_client":
            raise
        raise BackendError(_MISSING) from exc
    return prometheus_client


class WorkerMetrics:
    """The metrics of one process; ``job_finished``/``job_lost`` are what a worker calls.

    Raises:
        BackendError: prometheus-client is not installed (the message says how).
    """

    def __init__(self, backend: Backend | None = None) -> None:
        prom = _client()
        self.backend = backend
        self.registry = prom.CollectorRegistry()
        self.completed = prom.Counter("runfox_steps_completed", "Step attempts that succeeded",
                                      ["fn"], registry=self.registry)
        self.failed = prom.Counter("runfox_steps_failed", "Step attempts that failed",
                                   ["fn", "error_type"], registry=self.registry)
        self.duration = prom.Histogram("runfox_step_duration_seconds",
                                       "Seconds a step attempt ran in the executor", ["fn"],
                                       registry=self.registry)
        self.lost = prom.Counter("runfox_worker_lost",
                                 "Jobs handed out again after a lease ran out "
                                 "(reported as WorkerLost)", ["fn"], registry=self.registry)
        depth = prom.Gauge("runfox_queue_depth", "Jobs waiting for a worker",
                           registry=self.registry)
        depth.set_function(self._queue_depth)
        alive = prom.Gauge("runfox_workers_alive", "Workers whose heartbeat is recent",
                           registry=self.registry)
        alive.set_function(self._workers_alive)
        self._server: Any = None

    def job_finished(self, fn: str, error_type: str | None, seconds: float) -> None:
        """One attempt ran: ``error_type`` is ``None`` when it succeeded."""
        self.duration.labels(fn).observe(seconds)
        if error_type is None:
            self.completed.labels(fn).inc()
        else:
            self.failed.labels(fn, error_type).inc()

    def job_lost(self, fn: str) -> None:
        """A job came back after its lease ran out."""
        self.lost.labels(fn).inc()

    def _queue_depth(self) -> float:
        if self.backend is None:
            return math.nan
        try:
            return float(self.backend.runner.queue_depth())
        except Exception:
            return math.nan

    def _workers_alive(self) -> float:
        if self.backend is None:
            return math.nan
        try:
            rows = self.backend.store.workers().list()
        except Exception:
            return math.nan
        now = time.time()
        return float(sum(1 for w in rows if not w.dead(now)))

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (what a scrape gets)."""
        return bytes(_client().generate_latest(self.registry))

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the port
        (useful with ``port=0``)."""
        prom = _client()
        server, _thread = prom.start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_metrics(backend: Backend, port: int, host: str = "127.0.0.1") -> WorkerMetrics:
    """Start serving metrics for ``backend`` on ``host:port``; returns the ``WorkerMetrics``."""
    metrics = WorkerMetrics(backend)
    metrics.serve(port, host)
    return metrics
