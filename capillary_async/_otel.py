"""Tracing through OpenTelemetry, when its API is installed (the ``otel`` extra).

Each HTTP attempt is a client span with the semantic-convention attributes
(``http.request.method``, ``url.full``, ``server.address``, ``server.port``,
``http.response.status_code``, ``http.request.resend_count``, ``error.type``)
and Capillary's request id; a retried attempt says why (``capillary.retry_reason``).
Each bulk job is a span holding its attempts, whose attributes give the final
counts; a stop and a 429 pause are events on it. Every attribute is set here,
and nothing of a header, a body or a credential is among them.

Without the API, or with the API and no SDK configured, every function here
is a no-op: no span is made, not even OpenTelemetry's own no-op one.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._version import __version__

if TYPE_CHECKING:
    from ._bulk._report import BulkReport

trace: Any
try:
    from opentelemetry import trace
except ImportError:  # pragma: no cover - the otel extra is optional
    trace = None

__all__ = ["attempt_span", "end_job", "job_event", "retry_reason", "start_job", "using"]

#: Why the next attempt is made (the error type of the one before), for its span.
retry_reason: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "capillary_retry_reason", default=None
)


_cached: tuple[Any, Any] = (None, None)  # (provider, its tracer)


def _tracer() -> Any:
    """The tracer of the configured SDK; None when tracing is off (no API, or no SDK set).

    With no SDK configured the global provider is OpenTelemetry's proxy: no
    span would be recorded, so none is made (not even a no-op one).
    """
    global _cached  # noqa: PLW0603 - one tracer per provider, made once
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    if _cached[0] is not provider:
        _cached = (provider, provider.get_tracer("capillary_async", __version__))
    return _cached[1]


def tracing() -> bool:
    """Whether spans are being recorded (an SDK is configured).

    Until a provider is set, OpenTelemetry's API looks it up in the environment
    on every call; the common case (none set, none named there) answers here.
    """
    if trace is None:
        return False
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _FROM_ENVIRONMENT:
        return False
    return _tracer() is not None


_UNKNOWN = object()
#: A provider named by the environment is made on first use by the API itself.
_FROM_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


@contextlib.contextmanager
def attempt_span(method: str, path: str, url: str, attempt: int) -> Iterator[Any]:
    """A client span around one HTTP exchange (None when tracing is off)."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        f"{method} {path}",
        kind=trace.SpanKind.CLIENT,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if span.is_recording():
            parts = urlsplit(url)
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.full", f"{parts.scheme}://{parts.netloc}{parts.path}")
            span.set_attribute("server.address", parts.hostname or "")
            span.set_attribute(
                "server.port", parts.port or (443 if parts.scheme == "https" else 80)
            )
            if attempt > 1:
                span.set_attribute("http.request.resend_count", attempt - 1)
                reason = retry_reason.get()
                if reason is not None:
                    span.set_attribute("capillary.retry_reason", reason)
        yield span


def finish_attempt(
    span: Any, *, status: int | None = None, request_id: str | None = None, error: str = ""
) -> None:
    """An exchange's outcome on its span: the status, the request id, or the error's type."""
    if span is None or not span.is_recording():
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
            span.set_status(trace.StatusCode.ERROR)
    if request_id is not None:
        span.set_attribute("capillary.request_id", request_id)
    if error:
        span.set_attribute("error.type", error)
        span.set_status(trace.StatusCode.ERROR)


def start_job(kind: str, method: str, path: str) -> Any:
    """A bulk job's span, started (not made current: ``using`` lends it to the job's tasks)."""
    tracer = _tracer()
    if tracer is None:
        return None
    span = tracer.start_span(f"capillary bulk {kind}", kind=trace.SpanKind.INTERNAL)
    if span.is_recording():
        span.set_attribute("capillary.bulk.endpoint", f"{method} {path}")
    return span


@contextlib.contextmanager
def using(span: Any) -> Iterator[None]:
    """Make ``span`` current while tasks are started, so their spans are its children."""
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=False):
        yield


def job_event(span: Any, name: str, **attributes: Any) -> None:
    """A stop or a pause, as an event on the job's span."""
    if span is not None and span.is_recording():
        span.add_event(name, {k: v for k, v in attributes.items() if v is not None})


def end_job(span: Any, report: BulkReport) -> None:
    """The job's final counts on its span, and the span ended."""
    if span is None:
        return
    if span.is_recording():
        for name in ("total", "succeeded", "failed", "invalid", "unknown", "not_attempted"):
            span.set_attribute(f"capillary.bulk.{name}", getattr(report, name))
        span.set_attribute("capillary.bulk.requests", report.requests)
        span.set_attribute("capillary.bulk.retried_requests", report.retried_requests)
        if report.stop_reason:
            span.set_attribute("capillary.bulk.stop_reason", report.stop_reason)
    span.end()
