"""Basic (MD5 rule), OAuth (caching, renewal, single flight, 498) and bearer tokens."""

from __future__ import annotations

import json
import logging
import pickle
from typing import Any

import anyio
import pytest

from capillary_async import (
    AuthenticationError,
    BasicAuth,
    BearerToken,
    OAuthCredentials,
    Request,
    Response,
    RetryPolicy,
    ServerError,
    TokenHeaderStyle,
)

from .conftest import REDEMPTION_REQUEST, REDEMPTION_RESPONSE, FakeClock, Script, reply

TOKEN_PATH = "/v3/oauth/token/generate"
SECRET = "very-secret-client-secret"


def test_basic_auth_matches_the_docs_worked_example() -> None:
    auth = BasicAuth("store.server", "server123")
    assert auth.header_value == "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"
    digest = BasicAuth.from_md5("store.server", "8a16a6b70505eb1f1ff7cdc0cd5559a7")
    assert digest.header_value == auth.header_value
    assert BasicAuth.from_md5("store.server", "8A16A6B70505EB1F1FF7CDC0CD5559A7") == auth


def test_basic_auth_input_errors_name_the_field_not_the_secret() -> None:
    with pytest.raises(ValueError, match="password_md5") as info:
        BasicAuth.from_md5("u", "not-a-digest-but-a-password")
    assert "not-a-digest" not in str(info.value)
    with pytest.raises(ValueError, match="username"):
        BasicAuth("a:b", "pw")
    with pytest.raises(ValueError, match="password"):
        BasicAuth("u", "")
    with pytest.raises(ValueError, match="secret"):
        OAuthCredentials("key", "")
    with pytest.raises(ValueError, match="token"):
        BearerToken(" ")


def test_credentials_never_show_their_secrets() -> None:
    basic = BasicAuth("till.user", "p4ssw0rd-plain")
    digest = basic.header_value.split()[1]
    oauth = OAuthCredentials("client-key", SECRET)
    bearer = BearerToken("tok-abcdef-123")
    for obj, secrets in [
        (basic, ["p4ssw0rd-plain", digest]),
        (oauth, [SECRET]),
        (bearer, ["tok-abcdef-123"]),
    ]:
        shown = repr(obj) + str(obj) + f"{obj}" + repr([obj])
        for secret in secrets:
            assert secret not in shown
        assert "<redacted>" in shown
        with pytest.raises(TypeError, match="not picklable"):
            pickle.dumps(obj)
        with pytest.raises(AttributeError):
            obj._token = "x"  # type: ignore[union-attr]
    assert "till.user" in repr(basic)
    assert "client-key" in repr(oauth)


def test_token_header_styles() -> None:
    assert TokenHeaderStyle.OAUTH.headers("t") == {"X-CAP-API-OAUTH-TOKEN": "t"}
    assert TokenHeaderStyle.BEARER.headers("t") == {
        "Authorization": "Bearer t",
        "X-CAP-API-AUTH": "t",
    }


async def test_bearer_token_is_sent_as_configured(make_client: Any) -> None:
    script = Script(reply(200, REDEMPTION_RESPONSE))
    auth = BearerToken("tok-1", header_style=TokenHeaderStyle.BEARER)
    async with make_client(script, auth=auth) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
    headers = script.requests[0].headers
    assert headers["Authorization"] == "Bearer tok-1"
    assert headers["X-CAP-API-AUTH"] == "tok-1"


async def test_bearer_token_refused_is_not_retried(make_client: Any) -> None:
    script = Script(reply(401, {"errors": [{"code": 401, "message": "Invalid token"}]}))
    async with make_client(script, auth=BearerToken("tok-1")) as client:
        with pytest.raises(AuthenticationError):
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert len(script.requests) == 1


class TokenServer:
    """Hands out numbered tokens and checks them on every other path."""

    def __init__(self, clock: FakeClock, ttl: int = 300) -> None:
        self.clock = clock
        self.ttl = ttl
        self.issued: list[str] = []
        self.expired: set[str] = set()
        self.gate: anyio.Event | None = None
        self.refuse_with: int | None = None

    async def __call__(self, request: Request) -> Response:
        if request.url.endswith(TOKEN_PATH):
            assert "Authorization" not in request.headers
            assert json.loads(request.content or b"") == {"key": "client-key", "secret": SECRET}
            if self.gate is not None:
                await self.gate.wait()
            token = f"token-{len(self.issued) + 1}"
            self.issued.append(token)
            return reply(
                200, {"data": {"accessToken": token, "ttlSeconds": self.ttl}, "errors": None}
            )
        token = request.headers.get("X-CAP-API-OAUTH-TOKEN")
        if token in self.expired:
            return reply(498, {"errors": [{"code": 498, "message": "Token expired at ..."}]})
        if token not in self.issued or self.refuse_with:
            return reply(self.refuse_with or 401, {"errors": [{"code": 401, "message": "bad"}]})
        return reply(200, REDEMPTION_RESPONSE)


def oauth() -> OAuthCredentials:
    return OAuthCredentials("client-key", SECRET)


async def test_oauth_fetches_once_and_reuses_the_token(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer(clock)
    script = Script(server)
    async with make_client(script, auth=oauth()) as client:
        for _ in range(3):
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert server.issued == ["token-1"]
    assert script.paths() == [TOKEN_PATH[1:]] + ["v2/points/updateRedemption"] * 3
    assert script.requests[1].headers["X-CAP-API-OAUTH-TOKEN"] == "token-1"


async def test_oauth_renews_before_the_ttl_runs_out(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer(clock, ttl=300)
    script = Script(server)
    async with make_client(script, auth=oauth()) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
        clock.advance(239)  # renewal is due at 80% of the life: 240 s
        await client.points.update_redemption(REDEMPTION_REQUEST)
        assert server.issued == ["token-1"]
        clock.advance(2)
        await client.points.update_redemption(REDEMPTION_REQUEST)
    assert server.issued == ["token-1", "token-2"]
    assert script.requests[-1].headers["X-CAP-API-OAUTH-TOKEN"] == "token-2"


async def test_oauth_single_flight_under_50_concurrent_calls(
    make_client: Any, clock: FakeClock
) -> None:
    server = TokenServer(clock)
    server.gate = anyio.Event()
    script = Script(server)
    async with make_client(script, auth=oauth()) as client, anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(client.points.update_redemption, REDEMPTION_REQUEST)
        await anyio.wait_all_tasks_blocked()
        server.gate.set()
    assert server.issued == ["token-1"]
    assert len(script.requests) == 51


async def test_498_renews_once_and_repeats(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer(clock)
    script = Script(server)
    async with make_client(script, auth=oauth()) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
        server.expired.add("token-1")
        result = await client.points.update_redemption(REDEMPTION_REQUEST)
    assert result.redemption_id == "Fnpztw"
    assert server.issued == ["token-1", "token-2"]
    assert [r.headers.get("X-CAP-API-OAUTH-TOKEN") for r in script.requests[-3:]] == [
        "token-1",
        None,
        "token-2",
    ]
    assert clock.sleeps == []  # a renewal is not a retry: no backoff


async def test_many_498s_with_one_token_cause_one_renewal(
    make_client: Any, clock: FakeClock
) -> None:
    server = TokenServer(clock)
    script = Script(server)
    async with make_client(script, auth=oauth()) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
        server.expired.add("token-1")
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(client.points.update_redemption, REDEMPTION_REQUEST)
    assert server.issued == ["token-1", "token-2"]


async def test_401_after_renewal_raises(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer(clock)
    server.refuse_with = 401
    script = Script(server)
    async with make_client(script, auth=oauth()) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert info.value.status == 401
    assert server.issued == ["token-1", "token-2"]
    assert len(script.requests) == 4


async def test_bad_key_and_secret_is_320001(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"data": None, "errors": [{"code": 320001, "message": "Invalid client key and secret"}]}
    script = Script(reply(401, body, {"X-CAP-REQUEST-ID": "tok-req"}))
    with caplog.at_level(logging.DEBUG, logger="capillary_async"):
        async with make_client(script, auth=oauth()) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.points.update_redemption(REDEMPTION_REQUEST)
    assert info.value.codes == (320001,)
    assert info.value.request_id == "tok-req"
    assert "Invalid client key and secret" in str(info.value)
    assert len(script.requests) == 1
    everything = str(info.value) + repr(info.value.body) + caplog.text
    assert SECRET not in everything


async def test_token_never_appears_in_logs(make_client: Any, clock: FakeClock, caplog: Any) -> None:
    server = TokenServer(clock)
    with caplog.at_level(logging.DEBUG, logger="capillary_async"):
        async with make_client(Script(server), auth=oauth()) as client:
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert "token-1" not in caplog.text
    assert SECRET not in caplog.text
    assert "POST /v3/oauth/token/generate -> 200" in caplog.text


async def test_token_endpoint_outage_is_retried_then_raised(make_client: Any) -> None:
    script = Script(reply(503))
    policy = RetryPolicy(max_attempts=3, jitter=False)
    async with make_client(script, auth=oauth(), retry=policy) as client:
        with pytest.raises(ServerError):
            await client.points.update_redemption(REDEMPTION_REQUEST)
    assert script.paths() == [TOKEN_PATH[1:]] * 3


async def test_token_response_without_a_token(make_client: Any) -> None:
    from capillary_async import APIError

    script = Script(reply(200, {"data": {"ttlSeconds": 5}, "errors": None}))
    async with make_client(script, auth=oauth()) as client:
        with pytest.raises(APIError, match="accessToken"):
            await client.points.update_redemption(REDEMPTION_REQUEST)


async def test_bearer_header_style_for_oauth(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer(clock)

    async def handler(request: Request) -> Response:
        if request.url.endswith(TOKEN_PATH):
            return await server(request)
        assert request.headers["Authorization"] == "Bearer token-1"
        assert request.headers["X-CAP-API-AUTH"] == "token-1"
        return reply(200, REDEMPTION_RESPONSE)

    auth = OAuthCredentials("client-key", SECRET, header_style=TokenHeaderStyle.BEARER)
    async with make_client(Script(handler), auth=auth) as client:
        await client.points.update_redemption(REDEMPTION_REQUEST)
