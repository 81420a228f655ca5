"""The one retry decision as a table: error, attempt and what may be repeated -> what to do.

Each row names the whole ``Decision`` (action, delay, pause, slow_down,
verdict, maybe_applied, not_repeated), with ``RetryPolicy(max_attempts=3,
jitter=False)``: backoff 0.5, 1.0, 2.0 seconds after attempts 1, 2, 3.
"""

from __future__ import annotations

from typing import Any

import pytest

from capillary_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ConnectionLostError,
    ConnectTimeoutError,
    ExpiryDate,
    ExpiryUpdate,
    OutcomeUnknownError,
    ReadTimeoutError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerError,
)
from capillary_async._exceptions import CapillaryError, api_error
from capillary_async._retry import Action, Decision, decide, maybe_applied

from .conftest import (
    EXPIRY_SUCCESS,
    REDEMPTION_REQUEST,
    REDEMPTION_RESPONSE,
    FakeClock,
    Script,
    reply,
)

POLICY = RetryPolicy(max_attempts=3, jitter=False)
LAST = POLICY.max_attempts


def refusal(*codes: int) -> dict[str, Any]:
    """Capillary's ``errors`` envelope, as a refused request carries it."""
    return {"errors": [{"status": False, "code": code, "message": "refused"} for code in codes]}


def status(code: int, body: Any = None, retry_after: str | None = None) -> APIError:
    return api_error(code, body, request_id="req-1", retry_after=retry_after)


def before_send(error: CapillaryError) -> CapillaryError:
    """The error as raised while getting a token, before the request itself went out."""
    error.before_send = True
    return error


def row(
    error: CapillaryError,
    attempt: int,
    expected: Decision,
    *,
    idempotent: bool = True,
    applied_before: bool = False,
    splittable: bool = False,
    name: str,
) -> Any:
    return pytest.param(error, attempt, idempotent, applied_before, splittable, expected, id=name)


R, SPLIT, FAIL, UNKNOWN, STOP = Action.RETRY, Action.SPLIT, Action.FAIL, Action.UNKNOWN, Action.STOP

TABLE = [
    # -- 429: everyone slows down, even when the attempt was the last ---------------------------
    row(status(429), 1, Decision(R, delay=0.5, pause=True, slow_down=True), name="429"),
    row(
        status(429, retry_after="9"),
        2,
        Decision(R, delay=9.0, pause=True, slow_down=True),
        idempotent=False,
        name="429-retry-after-not-idempotent",
    ),
    row(status(429), LAST, Decision(FAIL, delay=2.0, pause=True, slow_down=True), name="429-last"),
    # -- 503 / 521: not processed, so repeated whatever the request ------------------------------
    row(status(503), 1, Decision(R, delay=0.5), idempotent=False, name="503"),
    row(status(503), 2, Decision(R, delay=1.0), name="503-attempt-2"),
    row(
        status(503, retry_after="7"), 1, Decision(R, delay=7.0, pause=True), name="503-retry-after"
    ),
    row(
        status(503, retry_after="7"),
        LAST,
        Decision(FAIL, delay=7.0, pause=True),
        name="503-retry-after-last",
    ),
    row(status(503), LAST, Decision(FAIL, delay=2.0), name="503-last"),
    row(status(521), 1, Decision(R, delay=0.5), idempotent=False, name="521"),
    # -- 500 / 502 / 504: may have been applied ------------------------------------------------
    row(status(502), 1, Decision(R, delay=0.5, maybe_applied=True), name="502-idempotent"),
    row(status(504), 2, Decision(R, delay=1.0, maybe_applied=True), name="504-idempotent"),
    # 500 is not a retry status: given up at once, as unknown.
    row(status(500), 1, Decision(UNKNOWN, maybe_applied=True), name="500-idempotent"),
    row(
        status(502, retry_after="7"),
        1,
        Decision(R, delay=7.0, pause=True, maybe_applied=True),
        name="502-retry-after-idempotent",
    ),
    row(
        status(502),
        LAST,
        Decision(UNKNOWN, delay=2.0, maybe_applied=True),
        name="502-last-idempotent",
    ),
    *[
        row(
            status(code),
            1,
            Decision(UNKNOWN, maybe_applied=True, not_repeated=True),
            idempotent=False,
            name=f"{code}-not-idempotent",
        )
        for code in (500, 502, 504)
    ],
    row(
        status(502),
        1,
        Decision(UNKNOWN, maybe_applied=True, not_repeated=True),
        idempotent=False,
        splittable=True,
        name="502-not-idempotent-chunk-not-split",
    ),
    # -- transport errors: sent or not -------------------------------------------------------
    row(ConnectError("refused"), 1, Decision(R, delay=0.5), idempotent=False, name="connect"),
    row(
        ConnectTimeoutError("slow"), 2, Decision(R, delay=1.0), idempotent=False, name="connect-to"
    ),
    row(ConnectError("refused"), LAST, Decision(FAIL, delay=2.0), name="connect-last"),
    row(
        ReadTimeoutError("timed out"),
        1,
        Decision(UNKNOWN, maybe_applied=True, not_repeated=True),
        idempotent=False,
        name="read-timeout-not-idempotent",
    ),
    row(
        ReadTimeoutError("timed out"),
        1,
        Decision(R, delay=0.5, maybe_applied=True),
        name="read-timeout-idempotent",
    ),
    row(
        ConnectionLostError("dropped"),
        LAST,
        Decision(UNKNOWN, delay=2.0, maybe_applied=True),
        name="connection-lost-last-idempotent",
    ),
    row(
        ConnectError("refused"),
        2,
        Decision(R, delay=1.0, maybe_applied=True),
        applied_before=True,
        name="connect-after-an-ambiguous-attempt",
    ),
    row(
        ConnectError("refused"),
        LAST,
        Decision(UNKNOWN, delay=2.0, maybe_applied=True),
        applied_before=True,
        name="connect-last-after-an-ambiguous-attempt",
    ),
    # -- a body too large to read: never retried -----------------------------------------------
    row(
        ResponseTooLargeError(status=503, limit=1024),
        1,
        Decision(UNKNOWN, maybe_applied=True),
        name="too-large-idempotent",
    ),
    row(
        ResponseTooLargeError(status=200, limit=1024),
        1,
        Decision(UNKNOWN, maybe_applied=True, not_repeated=True),
        idempotent=False,
        name="too-large-not-idempotent",
    ),
    # -- 400: a verdict only in Capillary's words, and only for what was sent alone --------------
    row(
        status(400, refusal(8941)),
        1,
        Decision(FAIL, verdict=True),
        idempotent=False,
        name="400-codes-one-item",
    ),
    row(status(400, refusal(8941)), 1, Decision(SPLIT), splittable=True, name="400-codes-chunk"),
    row(status(400), 1, Decision(FAIL), name="400-bare"),
    row(status(400, "<html>Bad Request</html>"), 1, Decision(FAIL), name="400-html"),
    row(status(400), 1, Decision(SPLIT), splittable=True, name="400-bare-chunk"),
    row(
        status(400, refusal(8941)),
        2,
        Decision(UNKNOWN, maybe_applied=True),
        applied_before=True,
        name="400-codes-after-an-ambiguous-attempt",
    ),
    row(
        status(400, refusal(8941)),
        2,
        Decision(SPLIT, maybe_applied=True),
        applied_before=True,
        splittable=True,
        name="400-chunk-after-an-ambiguous-attempt",
    ),
    # A 2xx with a top-level envelope is a refusal, a verdict when it has codes.
    row(status(200, refusal(8941)), 1, Decision(FAIL, verdict=True), name="200-codes"),
    # -- 413: halve the chunk; one item cannot be halved ---------------------------------------
    row(status(413), 1, Decision(SPLIT), idempotent=False, splittable=True, name="413-chunk"),
    row(status(413), 1, Decision(FAIL), name="413-one-item"),
    row(status(413, refusal(413)), 1, Decision(FAIL, verdict=True), name="413-codes-one-item"),
    # -- credentials refused: stop the job, nothing was done -----------------------------------
    row(status(401), 1, Decision(STOP), name="401"),
    row(status(403), 1, Decision(STOP), splittable=True, name="403-chunk"),
    row(status(498, refusal(498)), 1, Decision(STOP), idempotent=False, name="498"),
    row(status(401), 2, Decision(STOP, maybe_applied=True), applied_before=True, name="401-after"),
    row(
        before_send(status(401, refusal(401))),
        1,
        Decision(STOP),
        idempotent=False,
        name="401-before-send",
    ),
    # -- other statuses: refused, or unknown -----------------------------------------------------
    # A bare 404 or 405 is the URL, not the item: every further request would fail too.
    row(status(404), 1, Decision(STOP), name="404"),
    row(status(405), 1, Decision(STOP), name="405"),
    row(status(404, refusal(404)), 1, Decision(FAIL), name="404-codes-no-verdict"),
    row(status(404), 1, Decision(STOP), splittable=True, name="404-chunk-not-split"),
    row(status(404, refusal(404)), 1, Decision(FAIL), splittable=True, name="404-codes-chunk"),
    row(status(302), 1, Decision(UNKNOWN, maybe_applied=True), name="302-idempotent"),
    row(
        status(200),
        1,
        Decision(UNKNOWN, maybe_applied=True, not_repeated=True),
        idempotent=False,
        name="200-without-codes",
    ),
    row(
        APIError("unexpected response shape", status=200),
        1,
        Decision(UNKNOWN, maybe_applied=True, not_repeated=True),
        idempotent=False,
        name="200-unreadable-shape",
    ),
    row(
        APIError("unexpected response shape", status=201),
        1,
        Decision(UNKNOWN, maybe_applied=True),
        splittable=True,
        name="201-unreadable-shape-chunk",
    ),
    # -- raised before sending (getting a token): never applied, so safe to repeat --------------
    row(
        before_send(ReadTimeoutError("token timed out")),
        1,
        Decision(R, delay=0.5),
        idempotent=False,
        name="read-timeout-before-send",
    ),
    row(
        before_send(status(502)),
        1,
        Decision(R, delay=0.5),
        idempotent=False,
        name="502-before-send",
    ),
]


@pytest.mark.parametrize(
    ("error", "attempt", "idempotent", "applied_before", "splittable", "expected"), TABLE
)
def test_decide(
    error: CapillaryError,
    attempt: int,
    *,
    idempotent: bool,
    applied_before: bool,
    splittable: bool,
    expected: Decision,
) -> None:
    decision = decide(
        error,
        attempt,
        idempotent=idempotent,
        policy=POLICY,
        applied_before=applied_before,
        splittable=splittable,
    )
    assert decision == expected


# A 2xx with an ``errors`` envelope but no codes may have been applied; so may any
# request after an attempt that might have been. Sent again (or in halves), a
# FIXED_DAYS item would be extended twice: it ends unknown, not repeated.
@pytest.mark.parametrize(
    ("error", "attempt", "applied_before", "splittable"),
    [
        pytest.param(status(200, {"errors": [{"message": "odd"}]}), 1, False, True, id="2xx-split"),
        pytest.param(status(200), 1, False, True, id="2xx-bare-split"),
        pytest.param(status(503), 2, True, False, id="503-after-maybe-applied"),
        pytest.param(status(400), 2, True, True, id="400-chunk-after-maybe-applied"),
    ],
)
def test_what_may_have_been_applied_is_not_repeated_when_not_idempotent(
    error: CapillaryError, attempt: int, applied_before: bool, splittable: bool
) -> None:
    decision = decide(
        error,
        attempt,
        idempotent=False,
        policy=POLICY,
        applied_before=applied_before,
        splittable=splittable,
    )
    assert decision.action is Action.UNKNOWN
    assert decision.not_repeated


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(status(500), True, id="500"),
        pytest.param(status(502), True, id="502"),
        pytest.param(status(504), True, id="504"),
        pytest.param(status(503), False, id="503"),
        pytest.param(status(521), False, id="521"),
        pytest.param(status(429), False, id="429"),
        pytest.param(status(400, refusal(8941)), False, id="400"),
        pytest.param(status(200), True, id="200-without-codes"),
        pytest.param(status(200, refusal(8941)), False, id="200-with-codes"),
        pytest.param(status(301), True, id="301"),
        pytest.param(ReadTimeoutError("t"), True, id="read-timeout"),
        pytest.param(ConnectionLostError("t"), True, id="connection-lost"),
        pytest.param(ConnectError("t"), False, id="connect"),
        pytest.param(ConnectTimeoutError("t"), False, id="connect-timeout"),
        pytest.param(ResponseTooLargeError(status=400, limit=1), True, id="too-large"),
        pytest.param(status(401), False, id="401"),
        pytest.param(status(403), False, id="403"),
        pytest.param(before_send(status(502)), False, id="502-before-send"),
        pytest.param(before_send(ReadTimeoutError("t")), False, id="read-timeout-before-send"),
        pytest.param(before_send(status(401)), False, id="401-before-send"),
        pytest.param(
            before_send(status(200)),
            False,
            id="200-before-send",
        ),
        pytest.param(
            OutcomeUnknownError("?", cause=ReadTimeoutError("t")), True, id="outcome-unknown"
        ),
    ],
)
def test_maybe_applied(error: CapillaryError, expected: bool) -> None:
    assert maybe_applied(error) is expected


def test_the_table_builds_the_classes_it_means() -> None:
    """The rows rely on api_error's status -> class mapping; a change there shows here."""
    assert type(status(400)) is BadRequestError
    assert type(status(200)) is BadRequestError
    assert type(status(413)) is APIError
    assert type(status(498)) is AuthenticationError
    assert type(status(521)) is ServerError
    assert status(400, refusal(8941, 8934)).codes == (8941, 8934)
    assert status(400).codes == ()
    assert status(503, retry_after="7").retry_after == 7.0
    assert status(503).retry_after is None
    assert ConnectError("x").sent is False
    assert ReadTimeoutError("x").sent is True
    assert ResponseTooLargeError(status=200, limit=1).status == 200


# -- the client's single-call path agrees with decide ------------------------------------------


def relative_expiry() -> ExpiryUpdate:
    return ExpiryUpdate(
        identifier_name="id",
        identifier_value="172440986",
        program_id=469,
        points_awarded_ref_id=117521910,
        points_awarded_ref_type="POINT_AWARDED",
        expiry_date=ExpiryDate(expiry_type="FIXED_DAYS", expiry_value=30),
    )


async def test_client_retries_an_idempotent_call_as_decide_says(
    make_client: Any, clock: FakeClock
) -> None:
    unavailable = reply(503, None, {"Retry-After": "7"})
    script = Script(reply(503), unavailable, reply(200, REDEMPTION_RESPONSE))
    expected = [
        decide(status(503), 1, idempotent=True, policy=POLICY),
        decide(status(503, retry_after="7"), 2, idempotent=True, policy=POLICY),
    ]
    assert [d.action for d in expected] == [Action.RETRY, Action.RETRY]
    async with make_client(script, retry=POLICY) as client:
        result = await client.points.update_redemption(REDEMPTION_REQUEST)
    assert result.redemption_id == "Fnpztw"
    assert len(script.requests) == 3
    assert script.bodies()[0] == script.bodies()[2] == REDEMPTION_REQUEST
    assert clock.sleeps == [d.delay for d in expected] == [0.5, 7.0]


async def test_client_gives_up_an_idempotent_call_when_decide_does(
    make_client: Any, clock: FakeClock
) -> None:
    script = Script(reply(503, None, {"X-CAP-REQUEST-ID": "last"}))
    assert decide(status(503), LAST, idempotent=True, policy=POLICY).action is Action.FAIL
    async with make_client(script, retry=POLICY) as client:
        with pytest.raises(ServerError) as info:
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert (info.value.status, info.value.request_id) == (503, "last")
    assert len(script.requests) == LAST
    assert clock.sleeps == [0.5, 1.0]


async def test_client_does_not_repeat_a_non_idempotent_call_after_a_502(
    make_client: Any, clock: FakeClock
) -> None:
    item = relative_expiry()
    assert item.idempotent is False
    script = Script(reply(502, None, {"X-CAP-REQUEST-ID": "gw"}), reply(200, {}))
    async with make_client(script, retry=POLICY) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.points.update_expiry([item])
    assert len(script.requests) == 1
    assert clock.sleeps == []
    cause = info.value.cause
    assert isinstance(cause, ServerError)
    assert (cause.status, info.value.request_id) == (502, "gw")
    assert info.value.__cause__ is cause
    assert decide(cause, 1, idempotent=False, policy=POLICY) == Decision(
        Action.UNKNOWN, maybe_applied=True, not_repeated=True
    )


async def test_client_repeats_a_non_idempotent_call_after_a_503(
    make_client: Any, clock: FakeClock
) -> None:
    script = Script(reply(503), reply(200, EXPIRY_SUCCESS))
    assert decide(status(503), 1, idempotent=False, policy=POLICY).action is Action.RETRY
    async with make_client(script, retry=POLICY) as client:
        result = await client.points.update_expiry([relative_expiry()])
    assert len(script.requests) == 2
    assert len(result.updates) == 1
    assert clock.sleeps == [0.5]
