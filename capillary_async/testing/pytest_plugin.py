"""The ``capillary_emulator`` pytest fixture: a fresh seeded emulator per test.

Registered through the ``pytest11`` entry point, so installing capillary-async
makes it available. It needs an async test runner (pytest-asyncio, or anyio's
plugin).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._server import Emulator

try:  # pytest-asyncio in strict mode only runs async fixtures declared with it
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - anyio's plugin runs plain async fixtures
    _async_fixture = pytest.fixture  # type: ignore[assignment]


@_async_fixture
async def capillary_emulator() -> AsyncIterator[Emulator]:
    """A running emulator (seed 0, 100 customers, credentials demo/demo) on 127.0.0.1."""
    async with Emulator(seed=0) as emulator:
        yield emulator
