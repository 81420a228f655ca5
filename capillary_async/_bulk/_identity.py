"""How a journal recognises an item of a list or a generator: its refs and a digest.

A file's rows are known by the file (its SHA-256); other inputs only by the
position of each item, so each item's refs and content are recorded and
compared on a rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from .._exceptions import ValidationError
from ._files import InputRow
from ._journal import stored_ref
from ._specs import BulkSpec

__all__ = ["item_digest", "same_refs"]


def item_digest(spec: BulkSpec[Any, Any], item: Any) -> str | None:
    """What an item holds, as a short digest of its wire form (None if it cannot be told).

    A journal of a list or a generator knows items by their position; this
    tells an item changed between runs (FIXED_DAYS 30 made 60) from the one
    recorded there.
    """
    data = item.data if isinstance(item, InputRow) else item
    try:
        # As the model sees it: "17" and 17, a dict and a model, are one item (an
        # invalid one is known by what it holds).
        with contextlib.suppress(ValidationError):
            data = spec.prepare(data)
        wire = spec.wire(data)
        try:
            text = json.dumps(wire, sort_keys=True, separators=(",", ":"), default=str)
        except TypeError:  # keys of mixed types cannot be sorted
            text = json.dumps(wire, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        return None
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:32]


def same_refs(stored: str | None, refs: tuple[Any, Any]) -> bool:
    """Whether an item's refs are the ones recorded (compared as text: "17" is 17)."""
    if stored is None:
        return True  # a row of a format 1 journal, or one without refs
    try:
        recorded = json.loads(stored)
    except ValueError:
        return True
    if not isinstance(recorded, list) or len(recorded) != 2:
        return True
    now = [stored_ref(value) for value in refs]
    return [_text(v) for v in recorded] == [_text(v) for v in now]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
