"""Corporate networks: a real forward proxy with credentials, a TLS server of a private CA,
and a caller's session with hostile defaults, all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import subprocess
import traceback
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from capillary_async import (
    APIError,
    BadRequestError,
    BasicAuth,
    CapillaryClient,
    ConnectError,
    DeadlineExceededError,
    OutcomeUnknownError,
    RetryPolicy,
)
from capillary_async.testing import Emulator, sample_expiry_updates

from .loopback import serving
from .redis_server import CA_EXTENSIONS, LEAF_EXTENSIONS, need
from .test_hostile import client_with, item, success_for

PROXY_USER, PROXY_PASSWORD = "corp.user", "Pr0xy-S3cret-pw!"


class ForwardProxy:
    """A plain HTTP forward proxy (absolute-form requests), asking for Basic credentials."""

    def __init__(self, user: str, password: str) -> None:
        pair = f"{user}:{password}".encode()
        self.expected = b"Basic " + base64.b64encode(pair)
        self.forwarded: list[bytes] = []  # request heads as they reached the target
        self.refused = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, version = lines[0].split(b" ")
            fields = [line.split(b":", 1) for line in lines[1:] if b":" in line]
            headers = {name.strip().lower(): value.strip() for name, value in fields}
            if headers.get(b"proxy-authorization") != self.expected:
                self.refused += 1
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n'
                    b"Connection: close\r\n\r\n"
                )
                return
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            url = aiohttp.client.URL(target.decode())
            kept = [
                line
                for line in lines[1:]
                if line and not line.lower().startswith((b"proxy-", b"connection:", b"keep-alive:"))
            ]
            forwarded = b"\r\n".join(
                [b" ".join([method, url.raw_path_qs.encode(), version]), *kept]
            )
            self.forwarded.append(forwarded)
            up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
            up_writer.write(forwarded + b"\r\nConnection: close\r\n\r\n" + body)
            await up_writer.drain()
            writer.write(await up_reader.read())  # the target closes when it has answered
            up_writer.close()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for 127.0.0.1 (openssl): (ca, cert, key)."""
    openssl = need("openssl")
    ca_key, ca, key, csr, cert = (
        directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "ext.cnf"
    ext.write_text(LEAF_EXTENSIONS + "subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], capture_output=True, check=True, timeout=30)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "1", "-subj", "/CN=Corp Test CA", *CA_EXTENSIONS)  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


async def refused_empty(request: aiohttp.web.Request) -> aiohttp.web.Response:
    body = {"errors": [{"code": 8931, "message": "Points expiry update request is empty"}]}
    return aiohttp.web.json_response(body, status=400)


def no_retries(**kwargs: Any) -> dict[str, Any]:
    return {"auth": BasicAuth("demo", "demo"), "retry": RetryPolicy.disabled(), **kwargs}


# -- a proxy with credentials ---------------------------------------------------------------


async def test_requests_go_through_a_proxy_and_its_password_is_never_shown() -> None:
    async with Emulator(seed=3) as emu, ForwardProxy(PROXY_USER, PROXY_PASSWORD) as proxy:
        url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
        items = sample_expiry_updates(emu.store, 3, now=emu.clock.now())
        async with CapillaryClient(emu.base_url, **no_retries(proxy=url)) as client:
            result = await client.points.update_expiry(items)
            shown = repr(client)
        assert len(result.updates) + len(result.failures) == 3
        assert len(proxy.forwarded) == 1
        assert proxy.forwarded[0].startswith(b"POST /v2/points/updateExpiry HTTP/1.1")
        assert emu.stats.requests == 1
    assert PROXY_PASSWORD not in shown
    assert f"proxy=http://<redacted>@127.0.0.1:{proxy.port}" in shown


async def test_a_proxy_refusing_the_credentials_is_an_error_that_names_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    async with Emulator(seed=3) as emu, ForwardProxy(PROXY_USER, "another") as proxy:
        url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
        async with CapillaryClient(emu.base_url, **no_retries(proxy=url)) as client:
            with pytest.raises(APIError) as info:
                await client.check()
    assert info.value.status == 407
    assert proxy.refused == 1
    assert emu.stats.requests == 0
    texts = [str(info.value), repr(info.value), caplog.text, json.dumps(info.value.body)]
    pair = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    for text in texts:
        assert PROXY_PASSWORD not in text
        assert pair not in text


async def test_a_proxy_nobody_listens_on_is_a_connect_error() -> None:
    with socket_port() as port:
        url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"
    async with CapillaryClient("http://127.0.0.1:9", **no_retries(proxy=url)) as client:
        with pytest.raises(ConnectError, match="could not connect to the proxy") as info:
            await client.check()
    assert PROXY_PASSWORD not in str(info.value) + repr(info.value)


async def test_trust_env_takes_the_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with Emulator(seed=3) as emu, ForwardProxy(PROXY_USER, PROXY_PASSWORD) as proxy:
        url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", url)
        async with CapillaryClient(emu.base_url, **no_retries()) as client:
            await client.check()
        assert proxy.forwarded == []  # not asked: the environment is not read
        async with CapillaryClient(emu.base_url, **no_retries(trust_env=True)) as client:
            await client.check()
        assert len(proxy.forwarded) == 1
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with CapillaryClient(emu.base_url, **no_retries(trust_env=True)) as client:
            await client.check()
        assert len(proxy.forwarded) == 1  # NO_PROXY: straight to the server


def test_bad_proxies_are_refused_without_quoting_them() -> None:
    for bad in ("ftp://u:hunter2-pw@proxy:21", "http://u:hunter2-pw@proxy:99999", "http://"):
        with pytest.raises(ValueError, match="proxy") as info:
            CapillaryClient("https://eu.api.capillarytech.com", auth=BasicAuth("u", "p"), proxy=bad)
        assert "hunter2" not in str(info.value)


# -- a private CA ----------------------------------------------------------------------------


async def test_a_private_ca_is_trusted_through_an_ssl_context(tmp_path: Path) -> None:
    ca, cert, key = make_ca(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with serving(refused_empty, ssl_context=server_context) as url:
        async with CapillaryClient(url, **no_retries()) as client:
            with pytest.raises(ConnectError, match=r"certificate of 127.0.0.1:\d+ could not be"):
                await client.check()  # not trusted by default
        context = ssl.create_default_context(cafile=str(ca))
        async with CapillaryClient(url, **no_retries(ssl=context)) as client:
            await client.check()
        async with CapillaryClient(url, **no_retries(ssl=False)) as client:
            await client.check()  # loopback only
    with pytest.raises(ValueError, match="ssl: False turns certificate checks off"):
        CapillaryClient("https://eu.api.capillarytech.com", **no_retries(ssl=False))


# -- a caller's session ------------------------------------------------------------------------


async def test_a_session_with_hostile_defaults_lends_only_its_pool() -> None:
    seen: list[dict[str, str]] = []

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(dict(request.headers))
        return await refused_empty(request)

    async with serving(answer) as url:
        jar = aiohttp.CookieJar(unsafe=True)
        jar.update_cookies({"session": "browser-leftover"}, aiohttp.client.URL(url))
        async with aiohttp.ClientSession(
            raise_for_status=True,
            cookie_jar=jar,
            headers={"X-Tenant": "someone-else", "Authorization": "Bearer caller-token"},
        ) as session:
            async with CapillaryClient(url, session=session, **no_retries()) as client:
                with pytest.raises(BadRequestError) as info:  # not ConnectionLostError
                    await client.request("POST", "/v2/points/updateExpiry", json={})
                await client.check()
            assert info.value.codes == (8931,)
            assert not session.closed
        for headers in seen:
            assert "Cookie" not in headers
            assert "X-Tenant" not in headers
            assert headers["Authorization"].startswith("Basic ")
        for option, value in (
            ("max_connections", 5),
            ("proxy", "http://127.0.0.1:3128"),
            ("ssl", False),
            ("trust_env", True),
        ):
            async with aiohttp.ClientSession() as session:
                with pytest.raises(ValueError, match=f"{option}: cannot apply to a session"):
                    CapillaryClient(url, session=session, **no_retries(**{option: value}))


@contextlib.contextmanager
def socket_port() -> Any:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# -- found by a hostile review -----------------------------------------------------------------


class ConnectProxy:
    """A proxy that answers CONNECT with garbage, or never answers."""

    def __init__(self, *, hang: bool) -> None:
        self.hang = hang
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._release = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            if self.hang:
                await self._release.wait()
            else:
                writer.write(b"garbage\r\n\r\n")
                await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.mark.parametrize(
    "userinfo",
    ["alice:TOKEN%40ONLY%2Fpw9", "TOKENONLYSECRET123456", f"{PROXY_USER}:{PROXY_PASSWORD}"],
)
async def test_a_proxy_failing_its_connect_is_not_sent_and_names_no_secret(userinfo: str) -> None:
    async with ConnectProxy(hang=False) as proxy:
        url = f"http://{userinfo}@127.0.0.1:{proxy.port}"
        async with CapillaryClient("https://127.0.0.1:9", **no_retries(proxy=url)) as client:
            with pytest.raises(ConnectError) as info:  # not OutcomeUnknownError: nothing sent
                await client.points.update_expiry([item(1, "FIXED_DAYS")])
    assert not isinstance(info.value, OutcomeUnknownError)
    text = "".join(traceback.format_exception(info.value)) + repr(info.value)
    for secret in ("TOKEN%40ONLY%2Fpw9", "TOKEN@ONLY/pw9", "TOKENONLYSECRET123456", PROXY_PASSWORD):
        assert secret not in text


async def test_a_deadline_that_runs_out_before_anything_is_written_is_not_sent() -> None:
    async with ConnectProxy(
        hang=True
    ) as silent:  # accepts, and never answers: a TLS handshake hangs
        url = f"https://127.0.0.1:{silent.port}"
        async with CapillaryClient(url, **no_retries()) as client:
            with pytest.raises(DeadlineExceededError) as info:
                await client.points.update_expiry([item(1, "FIXED_DAYS")], deadline=0.2)
    assert info.value.sent is False
    assert info.value.attempts == 1


async def test_raw_headers_echoing_credentials_are_redacted() -> None:
    async def echo(request: aiohttp.web.Request) -> aiohttp.web.Response:
        headers = {"X-Debug-Auth": request.headers.get("Authorization", "")}
        body = {"currencyExpiryUpdateResponse": [], "failures": []}
        return aiohttp.web.json_response(body, headers=headers)

    auth = BasicAuth("till.user", "Raw-S3cret-pw!")
    async with serving(echo) as url, CapillaryClient(url, auth=auth) as client:
        raw = await client.points.with_raw_response.update_expiry([item(1)])
    assert auth.header_value.split(" ", 1)[1] not in raw.headers["x-debug-auth"]
    assert "<redacted>" in raw.headers["x-debug-auth"]


async def test_headers_that_would_break_the_request_are_refused() -> None:
    async with client_with(success_for) as client:
        for name in ("Content-Length", "transfer-encoding", "Host", "Cookie", "Authorization"):
            with pytest.raises(ValueError, match=f"headers: {name} is set by the client"):
                await client.points.update_expiry([item(1)], headers={name: "2"})
        with pytest.raises(ValueError, match="longer than 8,192 characters"):
            client.with_options(headers={"X-A": "a" * 9000})
    with pytest.raises(TypeError, match=r"session: expected an aiohttp\.ClientSession"):
        CapillaryClient("https://eu.api.capillarytech.com", **no_retries(session=object()))


def test_network_options_are_refused_with_a_transport_of_ones_own() -> None:
    from capillary_async import MockTransport

    for option, value in (("proxy", "http://127.0.0.1:3128"), ("ssl", False), ("trust_env", True)):
        with pytest.raises(ValueError, match="transport: it makes its own connections"):
            CapillaryClient(
                "http://127.0.0.1:9",
                transport=MockTransport(success_for),
                **no_retries(**{option: value}),
            )
