"""SQLite in our words (its result codes) and values made fit to store (refs, codes)."""

from __future__ import annotations

import enum
import json
import sqlite3
from typing import Any

from .._exceptions import excerpt

__all__ = ["sqlite_code", "sqlite_reason", "stored_ref"]

#: Longest ref kept (a malformed row's "ref" can be anything the file held).
_REF_LIMIT = 200


#: SQLite's primary result codes, in words (Python 3.11+ names them on the exception).
_SQLITE_REASONS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "a disk input/output error",
    "SQLITE_READONLY": "it is read-only",
    "SQLITE_CANTOPEN": "a file could not be opened",
    "SQLITE_PERM": "permission denied",
    "SQLITE_BUSY": "another program is using it",
    "SQLITE_LOCKED": "another program is using it",
    "SQLITE_CORRUPT": "it is damaged",
    "SQLITE_NOTADB": "it is not an SQLite database",
    "SQLITE_NOMEM": "out of memory",
}
#: The same from SQLite's fixed English texts, for Python 3.10.
_SQLITE_TEXTS = (
    ("disk is full", "SQLITE_FULL"),
    ("disk i/o", "SQLITE_IOERR"),
    ("readonly", "SQLITE_READONLY"),
    ("unable to open", "SQLITE_CANTOPEN"),
    ("locked", "SQLITE_BUSY"),
    ("malformed", "SQLITE_CORRUPT"),
    ("not a database", "SQLITE_NOTADB"),
)


def sqlite_code(exc: sqlite3.Error) -> str | None:
    """The primary SQLite result code of an error (``SQLITE_FULL``), when known."""
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str):
        for code in _SQLITE_REASONS:
            if name == code or name.startswith(code + "_"):
                return code
    text = str(exc).lower()
    return next((code for fragment, code in _SQLITE_TEXTS if fragment in text), None)


def sqlite_reason(exc: sqlite3.Error) -> str:
    """Why SQLite failed, in our words (never its exception's repr)."""
    code = sqlite_code(exc)
    return _SQLITE_REASONS[code] if code else "an SQLite error"


def stored_ref(value: Any) -> Any:
    """A ref as kept: numbers and short text as they are; anything else as bounded text."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        # SQLite and json.dumps take 64-bit integers; a longer one (a hostile input's
        # 5,000 digits) is kept as bounded text, never allowed to end the job.
        return value if -(2**63) <= value < 2**63 else excerpt(value, _REF_LIMIT)
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return excerpt(value, _REF_LIMIT)


def _refs(ref_id: Any, ref_type: Any) -> str | None:
    """Both refs as one JSON text: what a row held comes back exactly, whatever its type."""
    if ref_id is None and ref_type is None:
        return None
    if type(ref_id) is int and isinstance(ref_type, enum.Enum):
        # The common row, spelt as json.dumps would: a member's value is our own
        # constant (no foreign text to bound or redact), written once per member.
        known = _MEMBER_JSON.get(ref_type)
        if known is None:
            known = _MEMBER_JSON[ref_type] = json.dumps(stored_ref(ref_type))
        return f"[{ref_id}, {known}]"
    return json.dumps([stored_ref(ref_id), stored_ref(ref_type)])


_MEMBER_JSON: dict[enum.Enum, str] = {}


def _legacy_ref(value: Any) -> Any:
    # Format 1 kept strings as they were and other values as JSON: a string that
    # reads as JSON text was most likely written as JSON; anything else is as is.
    if isinstance(value, str) and value.startswith('"'):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _code(value: Any) -> int | str | None:
    """An error code SQLite can hold (a huge number from a server would overflow it)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    return excerpt(value, 40)
