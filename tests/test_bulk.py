"""The bulk engine against a scripted server: accounting, chunking, retries, pacing, stops."""

from __future__ import annotations

import asyncio
import csv
import json
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capillary_async import (
    BasicAuth,
    BulkReport,
    CapillaryClient,
    ConnectError,
    ExpiryDate,
    ExpiryUpdate,
    InputFile,
    ItemOutcome,
    JournalMismatchError,
    MockTransport,
    OutcomeStatus,
    Progress,
    ReadTimeoutError,
    Request,
    Response,
    RetryBudget,
    RetryPolicy,
)

from .conftest import FakeClock, open_db, reply

FAR = "2030-01-01"


def update(ref: int, kind: str = "FIXED_DATE", ref_type: str = "POINT_AWARDED") -> ExpiryUpdate:
    value = {"FIXED_DATE": FAR, "FIXED_DAYS": 30, "FIXED_MONTHS": 1, "IMMEDIATE": None}[kind]
    return ExpiryUpdate(
        identifier_name="id",
        identifier_value="1",
        program_id=469,
        points_awarded_ref_id=ref,
        points_awarded_ref_type=ref_type,
        expiry_date=ExpiryDate(expiry_type=kind, expiry_value=value),
    )


def wire(ref: int, **changes: Any) -> dict[str, Any]:
    item = {
        "identifierName": "id",
        "identifierValue": "1",
        "programId": 469,
        "pointsAwardedRefId": ref,
        "pointsAwardedRefType": "POINT_AWARDED",
        "expiryDate": {"expiryType": "FIXED_DATE", "expiryValue": FAR},
    }
    item.update(changes)
    return item


class Server:
    """updateExpiry, scripted: per-ref fates, whole-request answers queued in front."""

    def __init__(
        self,
        *,
        fail: dict[int, int] | None = None,
        omit: set[int] | None = None,
        poison: set[int] | None = None,
        max_items: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.fail = fail or {}
        self.omit = omit or set()
        self.poison = poison or set()
        self.max_items = max_items
        self.extra = extra
        self.queue: deque[Any] = deque()
        self.requests: list[list[dict[str, Any]]] = []
        self.applied: list[int] = []

    def __call__(self, request: Request) -> Response:
        items = json.loads(request.content or b"{}").get("expiryDateUpdateRequest", [])
        self.requests.append(items)
        if self.queue:
            answer = self.queue.popleft()
            if callable(answer) and not isinstance(answer, Response):
                answer = answer(items)
            if isinstance(answer, BaseException):
                raise answer
            if answer is not None:
                return answer
        if self.max_items is not None and len(items) > self.max_items:
            return reply(413, {"errors": [{"code": 413, "message": "too large"}]})
        if any(i["pointsAwardedRefId"] in self.poison for i in items):
            message = "Valid values are: [POINT_AWARDED, ...]"
            return reply(400, {"errors": [{"status": False, "code": 8941, "message": message}]})
        updates, failures = [], []
        for item in items:
            ref = item["pointsAwardedRefId"]
            if ref in self.omit:
                continue
            if ref in self.fail:
                failures.append(
                    {
                        "pointsAwardedRefId": ref,
                        "pointsAwardedRefType": item["pointsAwardedRefType"],
                        "errorCode": self.fail[ref],
                        "errorMessage": f"refused {ref}",
                    }
                )
            else:
                self.applied.append(ref)
                updates.append(
                    {
                        "customerId": 1,
                        "pointsExpiryUpdateLogs": {
                            "paId": ref,
                            "paType": item["pointsAwardedRefType"],
                        },
                    }
                )
        if self.extra:
            updates.append(self.extra)
        body: dict[str, Any] = {"currencyExpiryUpdateResponse": updates}
        if failures:
            body["failures"] = failures
        return reply(201 if failures else 200, body, {"X-CAP-REQUEST-ID": f"r{len(self.requests)}"})


def client_for(server: Any, clock: FakeClock, **kwargs: Any) -> CapillaryClient:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=5))
    return CapillaryClient(
        "https://eu.api.capillarytech.com",
        auth=BasicAuth("u", "p"),
        transport=MockTransport(server),
        clock=clock,
        **kwargs,
    )


def by_index(report: BulkReport) -> dict[int, ItemOutcome]:
    return {o.index: o for o in report.outcomes()}


def assert_accounted(report: BulkReport, total: int) -> None:
    assert report.total == total
    assert (
        report.succeeded + report.failed + report.invalid + report.unknown + report.not_attempted
        == total
    )
    if report.keep_all:
        assert sorted(o.index for o in report.outcomes()) == list(range(total))


# -- accounting -------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fates=st.lists(
        st.sampled_from(["ok", "ok", "ok", "fail", "omit", "invalid", "poison", "dup"]),
        min_size=0,
        max_size=120,
    ),
    chunk_size=st.integers(min_value=1, max_value=40),
    concurrency=st.integers(min_value=1, max_value=6),
    faults=st.lists(st.sampled_from(["503", "timeout", "refused", None]), max_size=6),
)
def test_every_input_gets_exactly_one_outcome(
    fates: list[str], chunk_size: int, concurrency: int, faults: list[str | None]
) -> None:
    server = Server(
        fail={n: 3034 for n, f in enumerate(fates, 1) if f == "fail"},
        omit={n for n, f in enumerate(fates, 1) if f == "omit"},
        poison={n for n, f in enumerate(fates, 1) if f == "poison"},
    )
    fault_answers = {
        "503": reply(503),
        "timeout": ReadTimeoutError("slow"),
        "refused": ConnectError("refused"),
        None: None,
    }
    server.queue.extend(fault_answers[f] for f in faults)
    items: list[Any] = []
    for n, fate in enumerate(fates, 1):
        if fate == "invalid":
            items.append(wire(n, programId="x"))
        elif fate == "dup":
            items.append(update(1))  # the same ref as the first item
        else:
            items.append(update(n) if n % 2 else wire(n))

    async def run() -> BulkReport:
        async with client_for(server, FakeClock(), retry=RetryPolicy(max_attempts=10)) as client:
            return await client.points.bulk_update_expiry(
                items, chunk_size=chunk_size, concurrency=concurrency, keep_all=True
            )

    report = asyncio.run(run())
    assert_accounted(report, len(fates))
    outcomes = by_index(report)
    for n, fate in enumerate(fates, 1):
        outcome = outcomes[n - 1]
        expected = {
            "ok": OutcomeStatus.SUCCEEDED,
            "dup": None,
            "fail": OutcomeStatus.FAILED,
            "omit": OutcomeStatus.UNKNOWN,
            "invalid": OutcomeStatus.INVALID,
            "poison": OutcomeStatus.FAILED,
        }[fate]
        if fate == "dup":
            expected = outcomes[0].status if fates[0] != "invalid" else OutcomeStatus.SUCCEEDED
        refused = fate in ("fail", "poison") or (fate == "dup" and fates[0] in ("fail", "poison"))
        if refused and "timeout" in faults:
            # A refusal after an attempt that may have been applied proves nothing.
            allowed = (OutcomeStatus.FAILED, OutcomeStatus.UNKNOWN)
            assert outcome.status in allowed, (n, fate, outcome)
            continue
        assert outcome.status is expected, (n, fate, outcome)
        if fate == "poison":
            assert outcome.error_code == 8941
    for request in server.requests:  # never two items with one ref in a request
        refs = [i["pointsAwardedRefId"] for i in request]
        assert len(refs) == len(set(refs))
        assert len(refs) <= chunk_size


async def test_outcomes_carry_the_answer(clock: FakeClock) -> None:
    server = Server(fail={2: 3037})
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(1), wire(2), wire(3, programId=0)], keep_all=True
        )
    ok, failed, invalid = report.outcomes()
    assert ok.ok
    assert ok.update.points_expiry_update_logs.pa_id == 1
    assert ok.request_id == "r1"
    assert (failed.status, failed.error_code, failed.error_message) == (
        OutcomeStatus.FAILED,
        3037,
        "refused 2",
    )
    assert invalid.status is OutcomeStatus.INVALID
    assert invalid.error_code == 8934
    assert "programId" in (invalid.error_message or "")
    assert invalid.item == wire(3, programId=0)
    assert len(server.requests) == 1
    assert len(server.requests[0]) == 2  # the invalid item cost no request
    assert report.failures_by_code == {3037: 1, 8934: 1}


async def test_answers_that_name_strangers_or_leave_items_out(clock: FakeClock) -> None:
    stranger = {"pointsExpiryUpdateLogs": {"paId": 999, "paType": "POINT_AWARDED"}}
    server = Server(omit={2}, extra=stranger)
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry([update(1), update(2)], keep_all=True)
    first, second = report.outcomes()
    assert first.ok
    assert second.status is OutcomeStatus.UNKNOWN
    assert "did not mention" in (second.error_message or "")
    assert any("999" in note and "did not send" in note for note in report.anomalies)
    assert any("left out 1 of the 2" in note for note in report.anomalies)


async def test_chunks_are_bounded_and_duplicates_wait(clock: FakeClock) -> None:
    server = Server()
    items = [update(n) for n in range(1, 251)] + [update(7), update(7, "FIXED_DAYS")]
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(items, chunk_size=100, concurrency=3)
    assert report.succeeded == 252
    assert [len(r) for r in server.requests[:2]] == [100, 100]
    assert all(len(r) <= 100 for r in server.requests)
    sent_7 = [n for n, r in enumerate(server.requests) for i in r if i["pointsAwardedRefId"] == 7]
    assert len(sent_7) == 3
    assert len(set(sent_7)) == 3  # three different requests, in input order
    assert server.applied.count(7) == 3
    assert report.peak_held <= report.held_limit


# -- refusals and sizes ---------------------------------------------------------------------


async def test_a_refused_chunk_is_split_down_to_the_bad_items(clock: FakeClock) -> None:
    server = Server(poison={37, 80})
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 101)], chunk_size=100, keep_all=True
        )
    outcomes = by_index(report)
    assert {n for n, o in outcomes.items() if not o.ok} == {36, 79}
    assert outcomes[36].error_code == 8941
    assert report.succeeded == 98
    assert 0 < report.split_requests <= 2 * 100
    assert report.requests == 1 + report.split_requests
    assert sorted(server.applied) == [n for n in range(1, 101) if n not in (37, 80)]


async def test_413_halves_the_chunk_size_for_the_rest_of_the_job(clock: FakeClock) -> None:
    server = Server(max_items=30)
    seen: list[Progress] = []
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 1001)],
            chunk_size=100,
            concurrency=1,
            on_progress=seen.append,
        )
    assert report.succeeded == 1000
    assert seen[-1].chunk_size == 25
    sizes = [len(r) for r in server.requests]
    refused = [n for n in sizes if n > 30]
    # Only chunks built before the size came down: at most three of 100 are held
    # before the first answer, each refused with its two halves.
    assert len(refused) <= 9
    assert all(n == 25 for n in sizes[-30:])  # everything built afterwards fits


# -- retries -------------------------------------------------------------------------------


async def test_retryable_failures_are_retried_per_chunk(clock: FakeClock) -> None:
    server = Server()
    server.queue.extend([reply(503), reply(521), ConnectError("refused")])
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 11)], chunk_size=10
        )
    assert report.succeeded == 10
    assert (report.requests, report.retried_requests) == (4, 3)
    assert server.applied == list(range(1, 11))


async def test_ambiguous_failure_retries_only_the_idempotent_items(clock: FakeClock) -> None:
    server = Server()
    server.queue.append(ReadTimeoutError("slow"))
    items = [update(1), update(2, "FIXED_DAYS"), update(3, "IMMEDIATE"), update(4, "FIXED_MONTHS")]
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(items, keep_all=True)
    statuses = [o.status for o in report.outcomes()]
    assert statuses == [
        OutcomeStatus.SUCCEEDED,
        OutcomeStatus.UNKNOWN,
        OutcomeStatus.SUCCEEDED,
        OutcomeStatus.UNKNOWN,
    ]
    assert [len(r) for r in server.requests] == [4, 2]
    assert "FIXED_DAYS / FIXED_MONTHS" in (report.outcomes()[1].error_message or "")


@pytest.mark.parametrize(
    ("answer", "status"),
    [(reply(503), OutcomeStatus.FAILED), (reply(502), OutcomeStatus.UNKNOWN)],
)
async def test_exhausted_retries_give_the_last_error(
    clock: FakeClock, answer: Response, status: OutcomeStatus
) -> None:
    server = Server()
    server.queue.extend([answer] * 3)
    async with client_for(server, clock, retry=RetryPolicy(max_attempts=3)) as client:
        report = await client.points.bulk_update_expiry([update(1), update(2)], keep_all=True)
    assert [o.status for o in report.outcomes()] == [status, status]
    assert report.requests == 3
    assert report.outcomes()[0].error_message.startswith("ServerError")  # type: ignore[union-attr]


async def test_a_waiting_retry_does_not_stall_the_other_chunks() -> None:
    gate = anyio.Event()

    class GatedClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            self.sleeps.append(seconds)
            await gate.wait()

    server = Server()
    server.queue.append(reply(503))
    clock = GatedClock()
    async with (
        client_for(server, clock) as client,
        client.points.stream_update_expiry(
            [update(n) for n in range(1, 31)], chunk_size=10, concurrency=1
        ) as outcomes,
    ):
        seen = []
        async for outcome in outcomes:
            seen.append(outcome.index)
            if len(seen) == 20:
                gate.set()  # both fresh chunks went while the first one waited
    first_refs = [r[0]["pointsAwardedRefId"] for r in server.requests]
    assert first_refs == [1, 11, 21, 1]
    assert sorted(seen) == list(range(30))


async def test_a_429_pauses_every_worker_and_lowers_the_pace(clock: FakeClock) -> None:
    server = Server()
    server.queue.append(reply(429, None, {"Retry-After": "3"}))
    seen: list[Progress] = []
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 201)],
            chunk_size=10,
            concurrency=8,
            on_progress=seen.append,
        )
    assert report.succeeded == 200
    assert clock.sleeps.count(3.0) >= 2  # the chunk's own wait and other workers' pause
    assert min(p.concurrency for p in seen) == 4  # halved from 8, then grown back
    assert seen[-1].concurrency > 4


async def test_rate_limit_paces_requests(clock: FakeClock) -> None:
    server = Server()
    async with client_for(server, clock) as client:
        await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 101)], chunk_size=10, concurrency=4, rate_limit=2.0
        )
    assert len(server.requests) == 10
    assert sum(clock.sleeps) == pytest.approx(4.5)  # 9 gaps of half a second


async def test_retry_budget_stops_a_job_against_a_failing_server(clock: FakeClock) -> None:
    server = Server()
    server.queue.extend([reply(503)] * 1000)
    budget = RetryBudget(capacity=20, retry_cost=5)
    async with client_for(server, clock, retry=RetryPolicy(max_attempts=50)) as client:
        report = await client.points.bulk_update_expiry(
            (update(n) for n in range(1, 1001)), chunk_size=10, concurrency=2, retry_budget=budget
        )
    assert_accounted(report, 1000)
    assert report.stop_reason is not None
    assert "retry budget spent" in report.stop_reason
    assert report.not_attempted > 900
    assert report.failed > 0
    assert report.requests < 30


async def test_successes_refund_the_retry_budget(clock: FakeClock) -> None:
    """Every chunk fails once, then succeeds: only the refunds keep the job going."""
    for refund, stopped in ((5, False), (0, True)):
        server = Server()
        server.queue.extend([reply(503), None] * 10)
        budget = RetryBudget(capacity=20, retry_cost=5, success_refund=refund)
        async with client_for(server, clock) as client:
            report = await client.points.bulk_update_expiry(
                [update(n) for n in range(1, 101)],
                chunk_size=10,
                concurrency=1,
                retry_budget=budget,
            )
        assert_accounted(report, 100)
        assert (report.stop_reason is not None) is stopped
        assert report.succeeded == (40 if stopped else 100)


async def test_fail_fast_stops_at_the_first_chunk_failure(clock: FakeClock) -> None:
    server = Server(fail={3: 8015})
    server.queue.extend([None, reply(500)])
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 101)], chunk_size=10, concurrency=1, fail_fast=True
        )
    assert_accounted(report, 100)
    # A 500 may come after the change was made: its chunk is unknown, not failed.
    assert (report.succeeded, report.failed, report.unknown, report.not_attempted) == (
        9,
        1,
        10,
        80,
    )
    assert report.stop_reason is not None
    assert "fail_fast" in report.stop_reason


async def test_without_fail_fast_the_job_carries_on(clock: FakeClock) -> None:
    server = Server()
    server.queue.extend([None, reply(500)])
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 101)], chunk_size=10, concurrency=1
        )
    assert (report.succeeded, report.unknown, report.not_attempted) == (90, 10, 0)
    assert report.stop_reason is None


async def test_refused_credentials_stop_the_job(clock: FakeClock) -> None:
    server = Server()
    server.queue.extend([reply(401, {"errors": [{"code": 401, "message": "bad"}]})])
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 101)], chunk_size=10, concurrency=1
        )
    assert_accounted(report, 100)
    assert (report.failed, report.not_attempted) == (10, 90)
    assert report.stop_reason is not None
    assert "credentials" in report.stop_reason


# -- input, memory, cancellation ----------------------------------------------------------------


async def test_async_input_that_stalls_is_flushed(clock: FakeClock) -> None:
    queue: asyncio.Queue[ExpiryUpdate | None] = asyncio.Queue()

    async def feed() -> AsyncIterator[ExpiryUpdate]:
        while (item := await queue.get()) is not None:
            yield item

    server = Server()
    for n in (1, 2, 3):
        queue.put_nowait(update(n))
    async with (
        client_for(server, clock) as client,
        client.points.stream_update_expiry(feed(), chunk_size=100, flush_after=0.05) as outcomes,
    ):
        first = [await outcomes.__anext__() for _ in range(3)]
        assert sorted(o.index for o in first) == [0, 1, 2]
        queue.put_nowait(update(4))
        queue.put_nowait(None)
        rest = [o async for o in outcomes]
    assert [o.index for o in rest] == [3]
    assert [len(r) for r in server.requests] == [3, 1]


async def test_memory_stays_flat_for_200000_items(clock: FakeClock) -> None:
    read = 0
    seen = 0
    ahead = 0

    def items() -> Iterator[ExpiryUpdate]:
        nonlocal read, ahead
        date = ExpiryDate(expiry_type="FIXED_DATE", expiry_value=FAR)
        for n in range(1, 200_001):
            read += 1
            ahead = max(ahead, read - seen)
            yield ExpiryUpdate(
                identifier_name="id",
                identifier_value="1",
                program_id=1,
                points_awarded_ref_id=n,
                points_awarded_ref_type="POINT_AWARDED",
                expiry_date=date,
            )

    def fast(request: Request) -> Response:
        body = json.loads(request.content or b"")["expiryDateUpdateRequest"]
        updates = [
            {"pointsExpiryUpdateLogs": {"paId": i["pointsAwardedRefId"], "paType": "POINT_AWARDED"}}
            for i in body
        ]
        return reply(200, {"currencyExpiryUpdateResponse": updates})

    async with (
        client_for(fast, clock) as client,
        client.points.stream_update_expiry(items(), chunk_size=100, concurrency=8) as outcomes,
    ):
        async for _ in outcomes:
            seen += 1
    report = outcomes.report
    assert (report.total, report.succeeded) == (200_000, 200_000)
    assert report.held_limit == 100 * (8 + 2)
    assert report.peak_held <= report.held_limit
    # read ahead of the consumer: the held items, one chunk in the outcome buffer,
    # and the one item pulled from the input that waits for a token
    assert ahead <= report.held_limit + 100 + 1
    assert report.failures() == []


async def test_leaving_the_block_early_cancels_cleanly(clock: FakeClock) -> None:
    release = anyio.Event()

    async def slow(request: Request) -> Response:
        if len(server.requests) > 3:
            await release.wait()  # requests in flight when the consumer leaves
        return server(request)

    server = Server()
    tasks_before = len(asyncio.all_tasks())
    async with client_for(slow, clock) as client:
        seen: list[ItemOutcome] = []
        async with client.points.stream_update_expiry(
            [update(n) for n in range(1, 1001)], chunk_size=10, concurrency=4
        ) as outcomes:
            async for outcome in outcomes:
                seen.append(outcome)
                if len(seen) == 25:
                    break
        assert len(asyncio.all_tasks()) == tasks_before
        assert len({o.index for o in seen}) == 25
        assert all(o.ok for o in seen)
        # the client is still usable
        release.set()
        result = await client.points.update_expiry([update(5000)])
        assert result.updates[0].ref[0] == 5000


async def test_outer_cancellation_ends_the_job(clock: FakeClock) -> None:
    async def never(request: Request) -> Response:
        await anyio.sleep_forever()
        raise AssertionError

    tasks_before = len(asyncio.all_tasks())
    async with client_for(never, clock) as client:
        with anyio.move_on_after(0.05) as scope:
            await client.points.bulk_update_expiry([update(n) for n in range(1, 101)])
        assert scope.cancelled_caught
    assert len(asyncio.all_tasks()) == tasks_before


async def test_progress_reports_counts_and_a_watermark(clock: FakeClock) -> None:
    server = Server(fail={5: 3034})
    seen: list[Progress] = []

    async def record(progress: Progress) -> None:
        seen.append(progress)
        clock.advance(0.5)  # the job's time is the client's clock

    items = [update(n) for n in range(1, 51)] + [wire(51, programId="x")]
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            items, chunk_size=10, concurrency=2, on_progress=record
        )
    assert len(seen) >= 5  # at least once per completed chunk
    watermarks = [p.watermark for p in seen]
    assert watermarks == sorted(watermarks)
    final = seen[-1]
    assert final.watermark == report.total == 51
    assert (final.succeeded, final.failed, final.invalid, final.sent) == (49, 1, 1, 50)
    assert final.requests == 5
    assert final.elapsed == 0.5 * (len(seen) - 1)
    assert final.items_per_second == 51 / final.elapsed
    assert report.elapsed == final.elapsed


async def test_report_files(clock: FakeClock, tmp_path: Path) -> None:
    server = Server(fail={2: 3037})
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(1), update(2), wire(3, programId="x")]
        )
    assert report.failed == 1
    assert len(report.failures()) == 2
    with pytest.raises(RuntimeError, match="keep_all"):
        report.outcomes()
    report.to_json(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["total"] == 3
    assert data["failures_by_code"] == {"3037": 1, "8934": 1}
    assert [o["status"] for o in data["outcomes"]] == ["failed", "invalid"]
    assert data["outcomes"][0]["pointsAwardedRefId"] == 2
    assert data["outcomes"][0]["item"]["expiryDate"]["expiryValue"] == FAR
    report.to_csv(tmp_path / "failures.csv")
    rows = list(csv.DictReader((tmp_path / "failures.csv").read_text().splitlines()))
    assert [(r["index"], r["status"], r["error_code"]) for r in rows] == [
        ("1", "failed", "3037"),
        ("2", "invalid", "8934"),
    ]
    assert rows[0]["pointsAwardedRefType"] == "POINT_AWARDED"


async def test_options_are_checked(clock: FakeClock) -> None:
    async with client_for(Server(), clock) as client:
        for bad in (
            {"chunk_size": 0},
            {"concurrency": 0},
            {"rate_limit": 0},
            {"rate_limit": 1e-300},  # a job that would wait for ever
            {"rate_limit": float("nan")},
            {"flush_after": 0},
        ):
            with pytest.raises(ValueError, match=next(iter(bad))):
                await client.points.bulk_update_expiry([], **bad)
        report = await client.points.bulk_update_expiry([])
    assert report.total == 0
    assert report.ok


async def test_non_mapping_input_is_invalid(clock: FakeClock) -> None:
    async with client_for(Server(), clock) as client:
        report = await client.points.bulk_update_expiry(["nope", 42, update(1)], keep_all=True)
    assert [o.status for o in report.outcomes()] == [
        OutcomeStatus.INVALID,
        OutcomeStatus.INVALID,
        OutcomeStatus.SUCCEEDED,
    ]
    assert "mapping" in (report.outcomes()[0].error_message or "")


async def test_a_failing_progress_callback_raises_its_own_error(clock: FakeClock) -> None:
    def broken(progress: Progress) -> None:
        raise ValueError("progress callback broke")

    async with client_for(Server(), clock) as client:
        with pytest.raises(ValueError, match="progress callback broke"):
            await client.points.bulk_update_expiry(
                [update(n) for n in range(1, 50)], chunk_size=10, on_progress=broken
            )
        assert (await client.points.update_expiry([update(1)])).updates  # still usable


async def test_an_error_in_the_consumer_comes_out_unwrapped(clock: FakeClock) -> None:
    async def consume(client: CapillaryClient) -> None:
        async with client.points.stream_update_expiry(
            [update(n) for n in range(1, 50)], chunk_size=10
        ) as outcomes:
            async for _ in outcomes:
                raise KeyError("consumer broke")

    async with client_for(Server(), clock) as client:
        with pytest.raises(KeyError, match="consumer broke"):
            await consume(client)


async def test_a_journal_refuses_other_items_at_a_position_and_accepts_the_same_in_any_form(
    clock: FakeClock, tmp_path: Path
) -> None:
    """A list or generator is known by position: other items there are refused, nothing sent."""
    journal = tmp_path / "job.db"
    server = Server(fail={3: 8015})
    async with client_for(server, clock) as client:
        first = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 6)], journal=journal
        )
        assert (first.succeeded, first.failed) == (4, 1)
        # The same items as wire dicts (ids as text, as a CSV gives them), and more after.
        same = [{**wire(n), "pointsAwardedRefId": str(n)} for n in range(1, 9)]
        again = await client.points.bulk_update_expiry(same, journal=journal)
        assert (again.total, again.resumed, again.succeeded) == (8, 5, 7)
        assert [len(r) for r in server.requests] == [5, 3]  # only 6, 7, 8 went out
        with open_db(journal) as db:
            before = sorted(db.execute("SELECT idx, state, refs FROM items"))
        other = [update(n) for n in (1, 2, 99, 4)]
        with pytest.raises(JournalMismatchError, match="another item at position 2"):
            await client.points.bulk_update_expiry(other, journal=journal)
        assert len(server.requests) == 2  # nothing of the other items was sent
        with open_db(journal) as db:
            assert sorted(db.execute("SELECT idx, state, refs FROM items")) == before


async def test_a_journal_refuses_the_same_refs_with_changed_content(
    clock: FakeClock, tmp_path: Path
) -> None:
    """FIXED_DAYS 30 made 60 at the same position is another item: refused, nothing sent."""
    journal = tmp_path / "job.db"
    server = Server()
    days = {"expiryType": "FIXED_DAYS", "expiryValue": 30}
    items = [wire(n, expiryDate=days) for n in range(1, 6)]
    async with client_for(server, clock) as client:
        first = await client.points.bulk_update_expiry(items, journal=journal)
        assert first.succeeded == 5
        sent = len(server.requests)
        changed = [*items[:3], wire(4, expiryDate={**days, "expiryValue": 60}), items[4]]
        with pytest.raises(JournalMismatchError, match="another item at position 3"):
            await client.points.bulk_update_expiry(changed, journal=journal)
        assert len(server.requests) == sent  # nothing of the changed items was sent
        again = await client.points.bulk_update_expiry(items, journal=journal)
        assert (again.total, again.resumed, len(server.requests)) == (5, 5, sent)


@pytest.mark.parametrize("leave_after", [1, 2, 5, 11])
async def test_leaving_a_journalled_stream_early_records_every_answer_once(
    clock: FakeClock, tmp_path: Path, leave_after: int
) -> None:
    """Answers that came in as the caller left are recorded as they came, not as unknown."""
    journal = tmp_path / "job.db"
    server = Server()
    async with client_for(server, clock) as client:
        items = [update(n, kind="FIXED_DAYS") for n in range(1, 61)]
        async with client.points.stream_update_expiry(
            items, journal=journal, chunk_size=3, concurrency=2, keep_all=True
        ) as outcomes:
            seen = 0
            async for _ in outcomes:
                seen += 1
                if seen >= leave_after:
                    break
    report = outcomes.report
    indexes = [o.index for o in report.outcomes()]
    assert len(indexes) == len(set(indexes)) == report.total  # one outcome per item
    with open_db(journal) as db:
        rows = dict(db.execute("SELECT idx, state FROM items"))
    for outcome in report.outcomes():  # what the report says is what the journal holds
        assert rows[outcome.index] == outcome.status.value
    for ref in server.applied:  # applied: its answer read, or unknown; never anything else
        assert rows[ref - 1] in ("succeeded", "unknown")
    assert any(state == "succeeded" for state in rows.values())
    with open_db(journal) as db:
        counted = dict(db.execute("SELECT key, value FROM meta WHERE key = 'count:requests'"))
    assert int(counted["count:requests"]) == report.requests == len(server.requests)


async def test_rows_of_a_file_left_after_a_stop_keep_their_data_and_refs(
    clock: FakeClock, tmp_path: Path
) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(wire(n)) + "\n" for n in range(1, 41)))
    server = Server()
    server.queue.append(reply(401, {"errors": [{"code": 401, "message": "bad creds"}]}))
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            InputFile(source), chunk_size=5, concurrency=1, keep_all=True
        )
    assert report.stop_reason is not None
    left = [o for o in report.outcomes() if o.status is OutcomeStatus.NOT_ATTEMPTED]
    assert left
    for outcome in left:
        # The row's data (or its model, if it was read before the stop), never the row.
        assert outcome.item in (wire(outcome.index + 1), update(outcome.index + 1))
        assert outcome.line == outcome.index + 1
    out = tmp_path / "failures.csv"
    report.to_csv(out)
    with out.open() as written:
        rows = list(csv.DictReader(written))
    assert len(rows) == report.total - report.succeeded
    assert all(r["pointsAwardedRefId"] == str(int(r["index"]) + 1) for r in rows)


async def test_after_a_journal_failure_the_failures_still_come_from_a_complete_journal(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk stops the job; if the last write finds room, the report lists the rows."""
    from capillary_async._bulk._journal import Journal

    from .test_cli_hostile import BrokenDisk

    real_open = Journal.open.__func__  # type: ignore[attr-defined]

    async def opened(cls: Any, *args: Any, **kwargs: Any) -> Any:
        journal = await real_open(cls, *args, **kwargs)
        journal._db = BrokenDisk(journal._db, "'in_flight'", 10)  # room for one chunk's marks
        return journal

    monkeypatch.setattr(Journal, "open", classmethod(opened))
    server = Server(fail={1: 3034, 2: 3034})
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, 31)],
            journal=tmp_path / "job.db",
            chunk_size=10,
            concurrency=1,
            keep_failures=False,
        )
    assert report.journal_error is not None
    assert "disk is full" in report.journal_error
    assert report.journal_complete
    assert (report.failed, len(server.requests)) == (2, 1)
    out = tmp_path / "failures.csv"
    report.to_csv(out)
    with out.open() as written:
        rows = list(csv.DictReader(written))
    assert [(r["index"], r["status"], r["error_code"]) for r in rows] == [
        ("0", "failed", "3034"),
        ("1", "failed", "3034"),
    ]


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("retry_unknown", "false", TypeError),  # a truthy string must not resend unknowns
        ("dry_run", "no", TypeError),
        ("fail_fast", 0, TypeError),
        ("keep_failures", "no", TypeError),
        ("retry", 5, TypeError),
        ("retry_budget", 3, TypeError),
        ("on_progress", 1, TypeError),
        ("journal", "", TypeError),
        ("journal", 123, TypeError),
        ("timeout", -1, ValueError),
        ("timeout", float("nan"), ValueError),
        ("chunk_size", 2.0, ValueError),
        ("concurrency", 0, ValueError),
        ("rate_limit", float("inf"), ValueError),
        ("flush_after", 0, ValueError),
    ],
)
async def test_bulk_options_refuse_bad_values_naming_the_option_before_anything_is_sent(
    clock: FakeClock, option: str, value: Any, error: type[Exception]
) -> None:
    from capillary_async import BulkOptions

    with pytest.raises(error, match=option):
        BulkOptions(**{option: value})
    server = Server()
    async with client_for(server, clock) as client:
        with pytest.raises(error, match=option):
            await client.points.bulk_update_expiry([update(1)], **{option: value})
    assert server.requests == []


async def test_nan_and_infinity_are_refused_and_never_reach_a_report_as_bare_tokens(
    clock: FakeClock, tmp_path: Path
) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text(
        json.dumps(wire(1)) + "\n" + '{"programId": NaN}\n' + '{"programId": -Infinity}\n'
    )
    async with client_for(Server(), clock) as client:
        from_file = await client.points.bulk_update_expiry(InputFile(source), keep_all=True)
        from_list = await client.points.bulk_update_expiry(
            [{**wire(2), "programId": float("nan")}], keep_all=True
        )
    messages = [o.error_message for o in from_file.outcomes() if not o.ok]
    assert messages == [
        "line 2: not valid JSON (NaN is not a JSON value)",
        "line 3: not valid JSON (-Infinity is not a JSON value)",
    ]
    assert from_list.invalid == 1
    for report in (from_file, from_list):
        out = tmp_path / "report.json"
        report.to_json(out)
        strict = json.loads(out.read_text(), parse_constant=pytest.fail)
        assert strict["total"] == report.total


async def test_a_dry_run_reads_a_journal_without_writing_a_byte_of_it(
    clock: FakeClock, tmp_path: Path
) -> None:
    journal = tmp_path / "job.db"
    items = [update(n) for n in range(1, 9)]
    server = Server(fail={2: 3034})
    async with client_for(server, clock) as client:
        await client.points.bulk_update_expiry(items[:4], journal=journal)

        def state() -> dict[str, tuple[int, int]]:
            return {
                p.name: (p.stat().st_size, p.stat().st_mtime_ns)
                for p in tmp_path.iterdir()
                if p.name.startswith("job.db")
            }

        before = state()
        report = await client.points.bulk_update_expiry(items, journal=journal, dry_run=True)
        assert state() == before
    assert (report.resumed, report.not_attempted, report.requests) == (4, 4, 0)
    assert len(server.requests) == 1


async def test_a_server_inventing_a_code_per_item_keeps_failures_by_code_bounded(
    clock: FakeClock,
) -> None:
    from capillary_async._bulk._report import MAX_CODES

    server = Server(fail={n: 10_000 + n for n in range(1, MAX_CODES + 51)})
    async with client_for(server, clock) as client:
        report = await client.points.bulk_update_expiry(
            [update(n) for n in range(1, MAX_CODES + 51)], keep_failures=False
        )
    codes = report.failures_by_code
    assert len(codes) == MAX_CODES + 1
    assert codes["other"] == 50
    assert sum(codes.values()) == report.failed == MAX_CODES + 50
