"""Client logic against a scripted transport: endpoints, errors, retries, idempotency."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from capillary_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    BasicAuth,
    CapillaryClient,
    Cluster,
    ConnectError,
    ConnectionLostError,
    ConnectTimeoutError,
    Entity,
    ExpiryDate,
    ExpiryUpdate,
    MockTransport,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    RateLimitError,
    ReadTimeoutError,
    Redemption,
    RedemptionUpdate,
    RetryPolicy,
    ServerError,
    Timeouts,
    ValidationError,
)

from .conftest import (
    EXPIRY_ITEM,
    EXPIRY_SUCCESS,
    REDEMPTION_REQUEST,
    REDEMPTION_RESPONSE,
    FakeClock,
    Script,
    reply,
)

RID = {"X-CAP-REQUEST-ID": "req-123"}
FAILURE = {
    "pointsAwardedRefId": 117521910,
    "pointsAwardedRefType": "POINT_AWARDED",
    "errorCode": 8015,
    "errorMessage": "Customer not found for the given identifiers",
}
ENUM_REFUSAL = {
    "errors": [
        {
            "status": False,
            "code": 8941,
            "message": "Valid values are: [FIXED_DATE, FIXED_DAYS, FIXED_MONTHS, IMMEDIATE]",
        }
    ]
}


def item(kind: str = "FIXED_DATE", value: Any = "2030-01-01", ref: int = 117521910) -> ExpiryUpdate:
    return ExpiryUpdate(
        identifier_name="id",
        identifier_value="172440986",
        program_id=469,
        points_awarded_ref_id=ref,
        points_awarded_ref_type="POINT_AWARDED",
        expiry_date=ExpiryDate(expiry_type=kind, expiry_value=value),
    )


# -- the two endpoints --------------------------------------------------------------


async def test_update_redemption_sends_the_seed_request(make_client: Any) -> None:
    script = Script(reply(200, REDEMPTION_RESPONSE, RID))
    async with make_client(script) as client:
        result = await client.points.update_redemption(
            RedemptionUpdate(
                redemption_id="Fnpztw",
                bill_number="txn-79",
                purpose="Update redemption details",
                entity=Entity(
                    type="CUSTOMER", identifier_type="mobile", identifier_value="919731013853"
                ),
                custom_fields={"card_number": "123456"},
            )
        )
    (request,) = script.requests
    assert request.method == "PUT"
    assert request.url == "https://eu.api.capillarytech.com/v2/points/updateRedemption"
    assert script.bodies() == [REDEMPTION_REQUEST]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Authorization"].startswith("Basic ")
    assert "Cookie" not in request.headers
    assert isinstance(result, Redemption)
    assert result.redemption_id == "Fnpztw"
    assert result.request_id == "req-123"


async def test_update_redemption_accepts_a_wire_mapping(make_client: Any) -> None:
    script = Script(reply(200, REDEMPTION_RESPONSE))
    async with make_client(script) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
    assert script.bodies() == [REDEMPTION_REQUEST]


async def test_update_expiry_sends_one_request_with_every_item(make_client: Any) -> None:
    script = Script(reply(200, EXPIRY_SUCCESS, {"X-Cap-Requestid": "abc"}))
    async with make_client(script) as client:
        result = await client.points.update_expiry([EXPIRY_ITEM, item(ref=5)])
    (request,) = script.requests
    assert request.method == "POST"
    assert request.url.endswith("/v2/points/updateExpiry")
    body = script.bodies()[0]
    assert list(body) == ["expiryDateUpdateRequest"]
    assert body["expiryDateUpdateRequest"][0] == EXPIRY_ITEM
    assert body["expiryDateUpdateRequest"][1]["pointsAwardedRefId"] == 5
    assert len(result.updates) == 1
    assert result.request_id == "abc"


async def test_update_expiry_validates_before_sending(make_client: Any) -> None:
    script = Script(reply(200, EXPIRY_SUCCESS))
    bad = {**EXPIRY_ITEM, "programId": "x"}
    async with make_client(script) as client:
        with pytest.raises(ValidationError) as info:
            await client.points.update_expiry([EXPIRY_ITEM, bad])
        assert info.value.field == "expiryDateUpdateRequest[1].programId"
        with pytest.raises(ValidationError) as info:
            await client.points.update_expiry([])
        assert info.value.code == 8931
    assert script.requests == []


@pytest.mark.parametrize("status", [200, 201, 400])
@pytest.mark.parametrize(
    "envelope",
    ["currencyExpiryUpdateResponse", "updateCurrencyExpiryDateResponse", "entity"],
)
async def test_per_item_failures_are_data_whatever_the_status(
    make_client: Any, status: int, envelope: str
) -> None:
    updates = EXPIRY_SUCCESS["currencyExpiryUpdateResponse"]
    if envelope == "entity":
        body: dict[str, Any] = {
            "entity": {"updateCurrencyExpiryDateResponse": updates, "failures": [FAILURE]},
            "errors": [],
            "warnings": [],
        }
    else:
        body = {envelope: updates, "failures": [FAILURE]}
    script = Script(reply(status, body, RID))
    async with make_client(script) as client:
        result = await client.points.update_expiry([item(), item(ref=2)])
    assert [u.ref[0] for u in result.updates] == [117521910]
    assert [(f.points_awarded_ref_id, f.error_code) for f in result.failures] == [(117521910, 8015)]
    assert result.request_id == "req-123"


@pytest.mark.parametrize("status", [400, 200])
async def test_top_level_errors_envelope_raises(make_client: Any, status: int) -> None:
    script = Script(reply(status, ENUM_REFUSAL, RID))
    async with make_client(script) as client:
        with pytest.raises(BadRequestError) as info:
            await client.points.update_expiry([item()])
    error = info.value
    assert error.codes == (8941,)
    assert error.code == 8941
    assert error.status == status
    assert "Valid values are" in error.message
    assert error.body == ENUM_REFUSAL
    assert error.request_id == "req-123"
    assert "req-123" in str(error)
    assert len(script.requests) == 1


async def test_errors_alongside_item_data_are_kept(make_client: Any) -> None:
    body = {
        "entity": {"updateCurrencyExpiryDateResponse": [], "failures": [FAILURE]},
        "errors": [{"code": 8936, "message": "Points expiry update failed"}],
    }
    async with make_client(Script(reply(400, body))) as client:
        result = await client.points.update_expiry([item()])
    assert result.failures[0].error_code == 8015
    assert result.errors == body["errors"]


async def test_malformed_answer_is_an_api_error(make_client: Any) -> None:
    body = {"currencyExpiryUpdateResponse": "not a list"}
    async with make_client(Script(reply(200, body, RID))) as client:
        with pytest.raises(APIError, match="unexpected response shape") as info:
            await client.points.update_expiry([item()])
    assert info.value.request_id == "req-123"


# -- error mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (415, APIError),
        (429, RateLimitError),
        (461, APIError),
        (498, AuthenticationError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (521, ServerError),
    ],
)
async def test_status_maps_to_its_error(make_client: Any, status: int, cls: type[APIError]) -> None:
    body = {"errors": [{"status": False, "code": 4001, "message": "try later"}]}
    script = Script(reply(status, body, RID))
    async with make_client(script, retry=RetryPolicy.disabled()) as client:
        with pytest.raises(APIError) as info:
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert type(info.value) is cls
    assert (info.value.status, info.value.codes, info.value.request_id) == (
        status,
        (4001,),
        "req-123",
    )
    assert info.value.body == body
    assert len(script.requests) == 1


async def test_error_without_body_gets_a_reason(make_client: Any) -> None:
    async with make_client(Script(reply(503)), retry=RetryPolicy.disabled()) as client:
        with pytest.raises(ServerError, match="service unavailable"):
            await client.request("GET", "/v2/organization/programs")


async def test_non_json_error_body_is_kept_as_text(make_client: Any) -> None:
    from capillary_async import Response

    html = Response(status=502, headers={}, content=b"<html>Bad Gateway</html>")
    async with make_client(Script(html), retry=RetryPolicy.disabled()) as client:
        with pytest.raises(ServerError) as info:
            await client.request("GET", "/x")
    assert info.value.body == "<html>Bad Gateway</html>"


# -- retries ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504, 521])
async def test_retryable_statuses_are_retried(
    make_client: Any, clock: FakeClock, status: int
) -> None:
    script = Script(reply(status), reply(status), reply(200, REDEMPTION_RESPONSE))
    async with make_client(script) as client:
        result = await client.points.update_redemption(REDEMPTION_REQUEST)
    assert result.redemption_id == "Fnpztw"
    assert len(script.requests) == 3
    assert clock.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
async def test_other_statuses_are_not_retried(make_client: Any, status: int) -> None:
    script = Script(reply(status), reply(200, REDEMPTION_RESPONSE))
    async with make_client(script) as client:
        with pytest.raises(APIError):
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert len(script.requests) == 1


async def test_gives_up_after_max_attempts_with_the_last_error(
    make_client: Any, clock: FakeClock
) -> None:
    script = Script(reply(503, None, {"X-CAP-REQUEST-ID": "last"}))
    policy = RetryPolicy(max_attempts=5, backoff_base=1.0, backoff_cap=3.0, jitter=False)
    async with make_client(script, retry=policy) as client:
        with pytest.raises(ServerError) as info:
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert info.value.request_id == "last"
    assert len(script.requests) == 5
    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]


async def test_retry_after_seconds_is_honoured(make_client: Any, clock: FakeClock) -> None:
    script = Script(reply(429, None, {"Retry-After": "7"}), reply(200, REDEMPTION_RESPONSE))
    async with make_client(script) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
    assert clock.sleeps == [7.0]


async def test_retry_after_http_date_is_honoured(make_client: Any, clock: FakeClock) -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    script = Script(reply(429, None, {"Retry-After": when}), reply(200, REDEMPTION_RESPONSE))
    async with make_client(script) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
    assert 25 <= clock.sleeps[0] <= 30


async def test_retry_after_is_capped(make_client: Any, clock: FakeClock) -> None:
    script = Script(reply(429, None, {"Retry-After": "86400"}), reply(200, REDEMPTION_RESPONSE))
    async with make_client(script, retry=RetryPolicy(max_retry_after=60)) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
    assert clock.sleeps == [60.0]


async def test_rate_limit_error_carries_retry_after(make_client: Any) -> None:
    script = Script(reply(429, None, {"Retry-After": "12"}))
    async with make_client(script, retry=RetryPolicy.disabled()) as client:
        with pytest.raises(RateLimitError) as info:
            await client.request("GET", "/x")
    assert info.value.retry_after == 12.0


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=4.0)
    assert [policy.delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert policy.delay(3, rand=lambda: 0.25) == 0.5
    assert policy.delay(3, retry_after=9.0, rand=lambda: 0.0) == 9.0
    assert RetryPolicy(respect_retry_after=False).delay(1, 9.0, rand=lambda: 1.0) == 0.5
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# -- the idempotency rule --------------------------------------------------------------

AMBIGUOUS = [
    ReadTimeoutError("timed out"),
    ConnectionLostError("dropped"),
    reply(502),
    reply(504),
]
SAFE = [
    ConnectError("refused"),
    ConnectTimeoutError("slow connect"),
    reply(429),
    reply(503),
    reply(521),
]


@pytest.mark.parametrize("failure", AMBIGUOUS, ids=lambda f: getattr(f, "status", type(f).__name__))
@pytest.mark.parametrize("kind", ["FIXED_DAYS", "FIXED_MONTHS"])
async def test_ambiguous_failure_of_relative_expiry_is_not_repeated(
    make_client: Any, failure: Any, kind: str
) -> None:
    script = Script(failure, reply(200, EXPIRY_SUCCESS))
    async with make_client(script) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.points.update_expiry([item(), item(kind, 30, ref=2)])
    assert len(script.requests) == 1
    assert "may or may not have applied" in str(info.value)
    assert "FIXED_DAYS / FIXED_MONTHS" in str(info.value)
    assert info.value.__cause__ is info.value.cause


@pytest.mark.parametrize("failure", AMBIGUOUS, ids=lambda f: getattr(f, "status", type(f).__name__))
@pytest.mark.parametrize("kind", ["FIXED_DATE", "IMMEDIATE"])
async def test_ambiguous_failure_of_absolute_expiry_is_repeated(
    make_client: Any, failure: Any, kind: str
) -> None:
    value = "2030-01-01" if kind == "FIXED_DATE" else None
    script = Script(failure, reply(200, EXPIRY_SUCCESS))
    async with make_client(script) as client:
        result = await client.points.update_expiry([item(kind, value)])
    assert len(script.requests) == 2
    assert len(result.updates) == 1


@pytest.mark.parametrize("failure", SAFE, ids=lambda f: getattr(f, "status", type(f).__name__))
async def test_unprocessed_failure_of_relative_expiry_is_repeated(
    make_client: Any, failure: Any
) -> None:
    script = Script(failure, reply(200, EXPIRY_SUCCESS))
    async with make_client(script) as client:
        await client.points.update_expiry([item("FIXED_DAYS", 30)])
    assert len(script.requests) == 2


@pytest.mark.parametrize("failure", AMBIGUOUS, ids=lambda f: getattr(f, "status", type(f).__name__))
async def test_update_redemption_is_repeated_after_any_retryable_failure(
    make_client: Any, failure: Any
) -> None:
    script = Script(failure, reply(200, REDEMPTION_RESPONSE))
    async with make_client(script) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
    assert len(script.requests) == 2


async def test_generic_request_post_is_not_idempotent_by_default(make_client: Any) -> None:
    script = Script(ReadTimeoutError("timed out"), reply(200, {"ok": True}))
    async with make_client(script) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.request("POST", "/v2/something", json={"a": 1})
        assert await client.request("POST", "/v2/something", json={}, idempotent=True) == {
            "ok": True
        }
        script.answers = [ReadTimeoutError("timed out"), reply(200, {"programs": []})]
        assert await client.request("GET", "/v2/organization/programs") == {"programs": []}


async def test_transport_error_after_retries_is_raised_as_is(make_client: Any) -> None:
    script = Script(ConnectError("refused"))
    async with make_client(script, retry=RetryPolicy(max_attempts=2, jitter=False)) as client:
        with pytest.raises(ConnectError):
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert len(script.requests) == 2


# -- request(), timeouts, headers -----------------------------------------------------


async def test_request_reaches_any_endpoint_with_auth_and_params(make_client: Any) -> None:
    script = Script(reply(200, {"data": [1, 2]}))
    async with make_client(
        script, headers={"X-CAP-API-ATTRIBUTION-ENTITY-CODE": "store1"}
    ) as client:
        body = await client.request(
            "get", "/v2/organization/programs", params={"page": 2}, headers={"X-Trace": "t"}
        )
    assert body == {"data": [1, 2]}
    (request,) = script.requests
    assert request.method == "GET"
    assert request.url == "https://eu.api.capillarytech.com/v2/organization/programs?page=2"
    assert request.content is None
    assert "Content-Type" not in request.headers
    assert request.headers["X-CAP-API-ATTRIBUTION-ENTITY-CODE"] == "store1"
    assert request.headers["X-Trace"] == "t"
    assert request.headers["User-Agent"].startswith("capillary-async/")


async def test_path_must_be_absolute(make_client: Any) -> None:
    async with make_client(Script(reply(200))) as client:
        with pytest.raises(ValueError, match="must start with '/'"):
            await client.request("GET", "v2/x")


async def test_timeouts_per_client_and_per_call(make_client: Any) -> None:
    script = Script(reply(200, REDEMPTION_RESPONSE))
    async with make_client(script, timeout=Timeouts(connect=2, total=9)) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
        await client.points.update_redemption(REDEMPTION_REQUEST, timeout=3.0)
        await client.points.update_redemption(REDEMPTION_REQUEST, timeout=None)
        await client.request("GET", "/x", timeout=Timeouts(connect=1, total=None))
    assert [r.timeout for r in script.requests] == [
        Timeouts(connect=2, total=9),
        Timeouts(connect=3, total=3),
        Timeouts(connect=None, total=None),
        Timeouts(connect=1, total=None),
    ]
    with pytest.raises(ValueError, match=r"timeout\.total"):
        Timeouts(total=0)


# -- lifecycle and configuration --------------------------------------------------------


async def test_use_after_close_is_a_clear_error(make_client: Any) -> None:
    script = Script(reply(200, REDEMPTION_RESPONSE))
    client = make_client(script)
    async with client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
    assert client.closed
    await client.aclose()  # closing twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await client.points.update_redemption(REDEMPTION_REQUEST)
    with pytest.raises(RuntimeError, match="closed"):
        async with client:
            pass
    assert client.transport.closed  # type: ignore[attr-defined]


def test_base_urls_and_clusters() -> None:
    auth = BasicAuth("u", "p")
    transport = MockTransport(lambda r: reply(200))
    assert CapillaryClient(Cluster.EU, auth=auth, transport=transport).base_url == (
        "https://eu.api.capillarytech.com"
    )
    assert Cluster.APAC.timezone is not None
    assert Cluster.APAC.timezone.utcoffset(None) == timedelta(hours=5, minutes=30)
    assert Cluster.from_name("north-america") is Cluster.NORTH_AMERICA
    with pytest.raises(ValueError, match="unknown cluster"):
        Cluster.from_name("mars")
    assert {c.name for c in Cluster} >= {"EU", "APAC", "APAC2", "SEA", "US", "CN"}
    for url in ("http://127.0.0.1:8080", "http://localhost:1234/", "http://[::1]:9"):
        assert CapillaryClient(url, auth=auth, transport=transport).base_url == url.rstrip("/")
    intouch = CapillaryClient(
        "https://eu.intouch.capillarytech.com/", auth=auth, transport=transport
    )
    assert intouch.base_url == "https://eu.intouch.capillarytech.com"
    with pytest.raises(ValueError, match="clear text"):
        CapillaryClient("http://eu.api.capillarytech.com", auth=auth, transport=transport)
    proxied = CapillaryClient(
        "http://proxy.internal", auth=auth, transport=transport, allow_insecure=True
    )
    assert proxied.base_url == "http://proxy.internal"
    for bad in ("ftp://x", "eu.api.capillarytech.com", "https://x?a=1"):
        with pytest.raises(ValueError, match="base_url"):
            CapillaryClient(bad, auth=auth, transport=transport)
    with pytest.raises(TypeError, match="auth"):
        CapillaryClient(Cluster.EU, auth="user:pass", transport=transport)  # type: ignore[arg-type]


async def test_logs_one_line_per_request_without_secrets(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    auth = BasicAuth("till.user", "hunter2-password")
    script = Script(reply(503), reply(200, REDEMPTION_RESPONSE, RID))
    with caplog.at_level(logging.DEBUG, logger="capillary_async"):
        async with make_client(script, auth=auth) as client:
            await client.points.update_redemption(REDEMPTION_REQUEST)
    lines = [r.getMessage() for r in caplog.records]
    text = "\n".join(lines)
    assert "PUT /v2/points/updateRedemption -> 503" in text
    assert "PUT /v2/points/updateRedemption -> 200" in text
    assert "request id req-123" in text
    assert "attempt 2" in text
    assert "retrying in" in text
    assert "hunter2" not in text
    assert auth.header_value.split()[1] not in text
    assert "Basic" not in text
    info_lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert all("txn-79" not in line for line in info_lines)  # bodies only at DEBUG
    assert any("txn-79" in line for line in lines)


def test_client_repr_hides_the_password() -> None:
    client = CapillaryClient(
        Cluster.EU,
        auth=BasicAuth("till.user", "s3cret-pw"),
        transport=MockTransport(lambda r: reply(200)),
    )
    text = repr(client)
    header = BasicAuth("till.user", "s3cret-pw").header_value
    digest = hashlib.md5(b"s3cret-pw").hexdigest()
    assert "till.user" in text
    for secret in ("s3cret", digest, header, header.split(" ", 1)[1]):
        assert secret not in text


async def test_from_env_reads_the_target_and_credentials_the_command_line_reads() -> None:
    from capillary_async import BasicAuth, BearerToken, OAuthCredentials
    from capillary_async.testing import Emulator

    async with Emulator() as emu:
        env = {
            "CAPILLARY_BASE_URL": emu.base_url,
            "CAPILLARY_USERNAME": "demo",
            "CAPILLARY_PASSWORD": "demo",
        }
        async with CapillaryClient.from_env(env, deadline=5) as client:
            assert client.base_url == emu.base_url
            assert isinstance(client.auth, BasicAuth)
            assert client.deadline == 5
            await client.check()  # the credentials work
    eu = CapillaryClient.from_env({"CAPILLARY_CLUSTER": "eu", "CAPILLARY_TOKEN": "t" * 20})
    assert eu.cluster is None
    assert eu.base_url.startswith("https://eu")
    assert isinstance(eu.auth, BearerToken)
    oauth = {"CAPILLARY_CLUSTER": "EU", "CAPILLARY_CLIENT_KEY": "k", "CAPILLARY_CLIENT_SECRET": "s"}
    assert isinstance(CapillaryClient.from_env(oauth).auth, OAuthCredentials)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "no target: set CAPILLARY_BASE_URL or CAPILLARY_CLUSTER"),
        ({"CAPILLARY_CLUSTER": "mars", "CAPILLARY_TOKEN": "x" * 20}, "CAPILLARY_CLUSTER:"),
        (
            {"CAPILLARY_BASE_URL": "ftp://u:hunter2secret@h/", "CAPILLARY_TOKEN": "x" * 20},
            "CAPILLARY_BASE_URL:",
        ),
        (
            {"CAPILLARY_BASE_URL": "https://h/?token=hunter2secret" + "x" * 300},
            "CAPILLARY_BASE_URL: must not carry a query",
        ),
        ({"CAPILLARY_BASE_URL": "https://hunter2secret@h\r"}, "CAPILLARY_BASE_URL: must not carry"),
        ({"CAPILLARY_CLUSTER": "https://admin:hunter2secret@h"}, "CAPILLARY_CLUSTER: unknown"),
        ({"CAPILLARY_CLUSTER": "EU"}, "no credentials"),
        ({"CAPILLARY_CLUSTER": "EU", "CAPILLARY_USERNAME": "u"}, "CAPILLARY_PASSWORD is not set"),
        (
            {"CAPILLARY_CLUSTER": "EU", "CAPILLARY_PASSWORD": "hunter2secret"},
            "CAPILLARY_USERNAME is not set",
        ),
        (
            {"CAPILLARY_CLUSTER": "EU", "CAPILLARY_TOKEN": "t" * 20, "CAPILLARY_CLIENT_KEY": "k"},
            "CAPILLARY_CLIENT_SECRET is not set",
        ),
    ],
)
def test_from_env_names_the_variable_and_never_quotes_a_value(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named) as caught:
        CapillaryClient.from_env(env)
    assert "hunter2secret" not in str(caught.value)


def test_help_shows_the_points_calls_and_the_options() -> None:
    import pydoc

    text = pydoc.render_doc(CapillaryClient, renderer=pydoc.plaintext)
    assert "points" in text
    assert "update_expiry" in text
    for option in ("deadline", "max_response_bytes", "rate_limit", "proxy", "from_env"):
        assert option in text


def test_from_env_passes_allow_insecure_to_the_url_check() -> None:
    env = {"CAPILLARY_BASE_URL": "http://emulator:8080", "CAPILLARY_TOKEN": "t" * 20}
    with pytest.raises(ValueError, match="CAPILLARY_BASE_URL"):
        CapillaryClient.from_env(env)
    client = CapillaryClient.from_env(env, allow_insecure=True)
    assert client.base_url == "http://emulator:8080"


def test_from_env_strips_line_ends_and_prefers_the_url_as_the_command_line_does() -> None:
    env = {
        "CAPILLARY_BASE_URL": "https://eu.api.capillarytech.com\r\n",
        "CAPILLARY_CLUSTER": "APAC",
        "CAPILLARY_USERNAME": "till\r",
        "CAPILLARY_PASSWORD": "pw\r\n",
    }
    client = CapillaryClient.from_env(env)
    assert client.base_url == "https://eu.api.capillarytech.com"
    assert client.auth == BasicAuth("till", "pw")
    blank = {**env, "CAPILLARY_BASE_URL": "  "}
    assert CapillaryClient.from_env(blank).base_url.startswith("https://apac")
