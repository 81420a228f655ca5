"""Small types and sentinels shared by the client and its resources.

They live here, below both, so that neither imports the other to get them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs

__all__ = ["UNSET", "AcceptFn", "BeforeSend", "Reply"]


class _Unset:
    """Marks an argument not given, as distinct from ``None`` ("no limit")."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()

#: Decides whether a non-2xx (or error-envelope) answer is data for the caller.
AcceptFn = Callable[[int, Any], bool]
#: Awaited just before a request is written, once it has its slot and credentials.
BeforeSend = Callable[[], Awaitable[None]]


@attrs.define
class Reply:
    """A response after retries and auth: status, parsed body, request id.

    ``attempts`` and ``elapsed`` (seconds, the whole call) are set once the
    call is over.
    """

    status: int
    body: Any
    request_id: str | None
    headers: Mapping[str, str] = attrs.field(repr=False)
    attempts: int = 1
    elapsed: float = 0.0
