"""OpenTelemetry spans, one per job, when the ``otel`` extra is installed.

``runfox worker`` (``runfox.worker.Worker``) reports each job it ran as a span
named ``runfox.step <fn>`` with the execution, step, run, attempt, worker id and
outcome as attributes, timed by the worker (start and end of the executor call).
The span goes to whatever tracer provider the process configured (the
``opentelemetry-sdk`` with an exporter, or an auto-instrumentation agent); with no
provider configured the API's default does nothing. Without ``opentelemetry-api``
installed nothing is imported and nothing happens, at no cost per job.

Per job, ``record_job`` first asks for the global provider: while it is still the
API's placeholder (nothing configured) no span is built at all, and the tracer
of a configured provider is looked up once and kept (it is asked again only if
the provider object changes).
"""

from __future__ import annotations

from typing import Any

from .results import DispatchJob

__all__ = ["enabled", "record_job"]

try:  # the optional extra: pip install 'runfox[otel]'
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - depends on what is installed
    _trace = None  # type: ignore[assignment]


# The provider the kept tracer came from, and that tracer.
_kept: tuple[Any, Any] = (None, None)


def enabled() -> bool:
    """Whether ``opentelemetry-api`` is installed (spans are then reported)."""
    return _trace is not None


def record_job(job: DispatchJob, started_at: float, seconds: float, worker: str,
               error_type: str | None) -> None:
    """Report one finished job as a span from ``started_at`` (epoch seconds) lasting
    ``seconds``; ``error_type`` is ``None`` for a successful attempt."""
    global _kept
    if _trace is None:
        return
    provider = _trace.get_tracer_provider()
    if isinstance(provider, _trace.ProxyTracerProvider):
        return  # no provider configured: the span would be dropped unseen
    kept_provider, tracer = _kept
    if kept_provider is not provider:
        tracer = provider.get_tracer("runfox")
        _kept = (provider, tracer)
    attributes: dict[str, Any] = {
        "runfox.execution": job.workflow_execution_id, "runfox.step": job.step_id,
        "runfox.fn": job.fn, "runfox.run_id": job.run_id, "runfox.attempt": job.attempt,
        "runfox.worker": worker, "runfox.outcome": "error" if error_type else "ok"}
    if error_type:
        attributes["runfox.error_type"] = error_type
    start_ns = int(started_at * 1e9)
    span = tracer.start_span(f"runfox.step {job.fn}", start_time=start_ns,
                             attributes=attributes)
    if error_type:
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, error_type))
    span.end(end_time=start_ns + int(seconds * 1e9))
