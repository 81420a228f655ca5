"""Spans, checked with the OpenTelemetry SDK's in-memory exporter: one per attempt, one per job."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from capillary_async import BasicAuth, CapillaryClient, RetryPolicy
from capillary_async.testing import Emulator, Faults, sample_expiry_updates

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
PASSWORD = "Trace-S3cret-pw!"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # A provider is set once per process; the tests share it and clear its spans.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(_PROVIDER)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


async def test_each_attempt_is_a_client_span_with_http_attributes(
    spans: InMemorySpanExporter,
) -> None:
    async with Emulator(seed=2, password=PASSWORD) as emu:
        emu.faults = Faults(rate_503=1.0)
        base_url = emu.base_url
        retry = RetryPolicy(max_attempts=2, backoff_base=0.001, jitter=False)
        client = CapillaryClient(emu.base_url, auth=BasicAuth("demo", PASSWORD), retry=retry)
        rows = list(sample_expiry_updates(emu.store, 2, now=emu.clock.now()))
        async with client:
            with pytest.raises(Exception, match=r"(?i)service unavailable"):
                await client.points.update_expiry(rows)
            emu.faults = Faults()
            await client.points.update_expiry(rows)
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["POST /v2/points/updateExpiry"] * 3
    first, second, third = (dict(s.attributes or {}) for s in finished)
    assert finished[0].kind is trace.SpanKind.CLIENT
    assert first["http.request.method"] == "POST"
    assert first["url.full"] == f"{base_url}/v2/points/updateExpiry"
    assert first["server.address"] == "127.0.0.1"
    assert first["http.response.status_code"] == 503
    assert first["error.type"] == "503"
    assert str(first["capillary.request_id"]).startswith("emu-")
    assert second["http.request.resend_count"] == 1
    assert second["capillary.retry_reason"] == "503"
    assert third["http.response.status_code"] == 200
    assert "http.request.resend_count" not in third
    texts = repr([dict(s.attributes or {}) for s in finished]) + repr(
        [e.attributes for s in finished for e in s.events]
    )
    assert PASSWORD not in texts
    assert "Authorization" not in texts


async def test_a_bulk_job_is_a_span_holding_its_requests(spans: InMemorySpanExporter) -> None:
    async with Emulator(seed=2) as emu:
        rows = list(sample_expiry_updates(emu.store, 30, now=emu.clock.now()))
        async with CapillaryClient(emu.base_url, auth=BasicAuth("demo", "demo")) as client:
            report = await client.points.bulk_update_expiry(rows, chunk_size=10, fail_fast=True)
    finished = spans.get_finished_spans()
    (job,) = [s for s in finished if s.name == "capillary bulk expiry"]
    requests = [s for s in finished if s.name == "POST /v2/points/updateExpiry"]
    assert len(requests) == report.requests == 3
    assert all(s.parent is not None and s.parent.span_id == job.context.span_id for s in requests)
    attributes = dict(job.attributes or {})
    assert attributes["capillary.bulk.total"] == 30
    assert attributes["capillary.bulk.succeeded"] == report.succeeded
    assert attributes["capillary.bulk.requests"] == 3


async def test_a_stop_is_an_event_on_the_jobs_span(spans: InMemorySpanExporter) -> None:
    async with Emulator(seed=2) as emu:
        rows = list(sample_expiry_updates(emu.store, 30, now=emu.clock.now()))
        client = CapillaryClient(emu.base_url, auth=BasicAuth("demo", "wrong"))
        async with client:
            report = await client.points.bulk_update_expiry(rows, chunk_size=10)
    (job,) = [s for s in spans.get_finished_spans() if s.name == "capillary bulk expiry"]
    stops = [e for e in job.events if e.name == "stop"]
    assert len(stops) == 1
    assert "refused the credentials" in str((stops[0].attributes or {})["reason"])
    assert (job.attributes or {})["capillary.bulk.stop_reason"] == report.stop_reason
