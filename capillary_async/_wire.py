"""Bytes on the wire: request bodies, bounded JSON decoding of answers, checked headers."""

from __future__ import annotations

import json as jsonlib
import math
import platform
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from ._exceptions import excerpt
from ._version import __version__

__all__ = ["MAX_JSON_VALUES"]


def has_errors(body: Any) -> bool:
    return isinstance(body, Mapping) and bool(body.get("errors"))


#: Most JSON values an answer may hold: each costs 50-100 bytes once parsed, so a
#: 16 MiB body of ``{},{},...`` would take gigabytes. A real answer of 100 items
#: holds about a thousand.
MAX_JSON_VALUES = 500_000


def decode(content: bytes) -> Any:
    """JSON if the body is JSON a program can hold, else its text (which callers treat as odd)."""
    if not content:
        return None
    if len(content) > MAX_JSON_VALUES and (
        content.count(b",") + content.count(b"{") + content.count(b"[") > MAX_JSON_VALUES
    ):
        return content.decode("utf-8", "replace")
    # orjson first (several times faster); it reads integers past 64 bits as floats,
    # so a body with a run of 19 digits anywhere takes the exact path below, as do
    # NaN, lone surrogates, UTF-16 and anything else orjson refuses.
    if not has_long_number(content):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    try:
        return jsonlib.loads(content)
    except RecursionError:  # nested deeper than Python's stack: not an answer we can use
        pass
    except ValueError:
        try:  # an integer past Python's digit limit: keep it as its digits
            return jsonlib.loads(content, parse_int=_safe_int)
        except (ValueError, RecursionError):
            pass
    return content.decode("utf-8", "replace")


#: Every digit as "0" and every other byte as a space: a run of 19 digits shows as
#: ``_LONG_RUN``. Five times faster than a regular expression on a 40 kB answer.
_DIGITS_AS_ZERO = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_RUN = b"0" * 19


def has_long_number(text: bytes | str) -> bool:
    """Whether ``text`` holds a run of 19 or more digits (which orjson would not read exactly)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return _LONG_RUN in data.translate(_DIGITS_AS_ZERO)


def _safe_int(digits: str) -> int | str:
    return int(digits) if len(digits) <= 4000 else digits


def encode(value: Any, *, foreign: bool = False) -> bytes:
    """Compact UTF-8 JSON: orjson for the bodies the SDK builds, ``json`` for a caller's own.

    A caller's value (``foreign``) may hold what orjson writes and ``json``
    refuses (a date, an enum, a UUID, a dataclass): it is written as ``json``
    always has, its ``TypeError`` naming the type. Our own bodies are plain
    JSON; orjson writes them unless they hold what only ``json`` writes (an
    integer past 64 bits, a non-string key, a float that is not finite, which
    ``json`` writes as ``NaN`` where orjson would write ``null``).
    """
    if not foreign:
        try:
            data = orjson.dumps(value)
        except TypeError:
            pass
        else:
            if b"null" not in data or not _has_odd_float(value):
                return data
    return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _has_odd_float(value: Any) -> bool:
    """Whether a non-finite float hides in ``value`` (orjson wrote it as ``null``)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if not math.isfinite(item):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def user_agent() -> str:
    return (
        f"capillary-async/{__version__} (python {platform.python_version()}; "
        f"aiohttp {aiohttp.__version__})"
    )


def text(content: bytes) -> str:
    return excerpt(content.decode("utf-8", "replace"), 64 * 1024)


def checked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Extra headers as given, refused now if HTTP could not carry them (no value echoed)."""
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError("headers: a header name is empty or not a valid HTTP token")
        if name.lower() in _OURS:
            raise ValueError(
                f"headers: {name} is set by the client (the body's framing, the host, "
                "credentials, cookies): it cannot be given"
            )
        if isinstance(value, str) and len(value) > _MAX_VALUE:
            raise ValueError(
                f"headers: the value of {name} is longer than {_MAX_VALUE:,} characters"
            )
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise ValueError(
                f"headers: the value of {name} holds control characters or non-ASCII text, "
                "which HTTP headers cannot carry"
            )
    return dict(headers)


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
#: Headers the client sets itself: given by a caller, they would break the request's
#: framing (a body cut short, a smuggled one), its target, or carry credentials and
#: cookies that never belong in extra headers.
_OURS = frozenset(
    {"content-length", "transfer-encoding", "connection", "host", "te", "upgrade", "trailer"}
    | {"authorization", "proxy-authorization", "cookie", "x-cap-api-oauth-token"}
)
#: The longest extra header value taken (servers refuse much less).
_MAX_VALUE = 8192
