"""A server on a loopback port answering updateExpiry with a test's handler."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web


@contextlib.asynccontextmanager
async def serving(handler: Any, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """``handler`` as updateExpiry, for answers the emulator never gives; https with a context."""
    app = aiohttp.web.Application()
    app.router.add_post("/v2/points/updateExpiry", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    scheme = "http" if ssl_context is None else "https"
    try:
        yield f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
