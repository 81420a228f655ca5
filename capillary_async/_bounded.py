"""A call to another service, bounded in time, in a task of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["bounded"]

T = TypeVar("T")


async def bounded(
    call: Callable[[], Coroutine[Any, Any, T]],
    timeout: float,
    on_abandon: Callable[[asyncio.Future[Any]], None] | None = None,
) -> T:
    """``await call()`` for at most ``timeout`` seconds, in a task of its own.

    A timeout that cancels the caller's own task relies on every library below
    it handing the cancellation back untouched. redis-py's cluster client on
    Python 3.10 does not (it can turn it into an error, then let a later one
    escape), and the caller's task, a user's request, ended cancelled. Here
    only the inner task is cancelled, and left to finish on its own; the
    caller gets ``TimeoutError``, the call's own error, or its result.
    ``on_abandon`` is told of a call left running, so that the caller can
    start no other while it still runs (a library that ignores cancellation
    and a client without socket timeouts would otherwise pile them up).
    """
    task = asyncio.ensure_future(call())
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:  # the caller was cancelled: so is the call
        _abandon(task, on_abandon)
        raise
    if not done:
        _abandon(task, on_abandon)
        raise TimeoutError
    if task.cancelled():  # cancelled from inside the library, not by our caller
        raise ConnectionError("the call was cancelled inside the client library")
    return task.result()


def _abandon(
    task: asyncio.Future[Any], on_abandon: Callable[[asyncio.Future[Any]], None] | None
) -> None:
    task.cancel()
    task.add_done_callback(_retrieve)
    if on_abandon is not None and not task.done():
        on_abandon(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: never "exception was never retrieved"
