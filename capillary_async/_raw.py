"""Raw responses: what the server answered to a call, its typed result parsed on demand.

``client.points.with_raw_response.update_expiry(...)`` runs the very same call
as ``client.points.update_expiry(...)`` (retries, auth, deadline) and hands
back the answer itself: status, headers, request id, how long the call took
and in how many attempts. ``parse()`` gives the typed result, as the plain call
would have returned it (raising as it would on an answer of unexpected shape).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from . import _secrets
from ._types import Reply

__all__ = ["RawResponse"]

T = TypeVar("T")


class RawResponse(Generic[T]):
    """One call's answer: ``status``, ``headers``, ``request_id``, ``elapsed``, ``attempts``."""

    __slots__ = ("_parse", "_parsed", "_reply")

    def __init__(self, reply: Reply, parse: Callable[[Reply], T]) -> None:
        self._reply = reply
        self._parse = parse
        self._parsed: list[T] = []

    @property
    def status(self) -> int:
        """The HTTP status of the answer that ended the call."""
        return self._reply.status

    @property
    def headers(self) -> Mapping[str, str]:
        """Its headers, names lower-case; credentials a server echoed are redacted."""
        return {name: _secrets.redact(value) for name, value in self._reply.headers.items()}

    @property
    def request_id(self) -> str | None:
        """Capillary's request id (``X-Cap-Requestid``), what its support asks for."""
        return self._reply.request_id

    @property
    def elapsed(self) -> float:
        """Seconds the whole call took: every attempt, backoff and pace wait."""
        return self._reply.elapsed

    @property
    def attempts(self) -> int:
        """How many attempts the call made (1 when the first one answered)."""
        return self._reply.attempts

    @property
    def body(self) -> Any:
        """The parsed JSON body, as the server sent it (credentials it echoed redacted)."""
        return self._reply.body

    def parse(self) -> T:
        """The typed result, parsed once."""
        if not self._parsed:
            self._parsed.append(self._parse(self._reply))
        return self._parsed[0]

    def __repr__(self) -> str:
        return (
            f"<RawResponse {self.status} request id {self.request_id} "
            f"in {self.elapsed * 1000:.1f} ms, {self.attempts} attempt(s)>"
        )
