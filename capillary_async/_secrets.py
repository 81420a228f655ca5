"""Every credential this process holds, so that no text of ours can quote one.

Credential objects hold the forms of their secret that travel on the wire (a
Basic header's base64, the ``user:md5`` it encodes, the MD5, a token, an OAuth
secret) for as long as they live, and an OAuth flow each token it receives for
as long as it uses it; so the set stays as small as what the process holds. A
server may echo any of them back in a body, a header or a malformed status
line, and spelled differently: JSON escapes (``\\u003d`` for ``=``), base64url,
no padding, upper-case hex. So each secret is also kept as its long runs of
letters and digits, and matched without regard to case: whatever the spelling,
the bulk of the secret is found and replaced.

``redact`` runs wherever foreign text becomes ours (``excerpt``), and
``redact_bytes`` on every response body before it is parsed.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

__all__ = ["REDACTED", "hold", "holds_secret", "longest", "redact", "redact_bytes", "redact_value"]

REDACTED = "<redacted>"
#: Whole values shorter than this are too common in ordinary text to be told apart.
_MIN_WHOLE = 8
#: Runs of letters and digits shorter than this could be words ("Customer" of a
#: human-chosen secret would match ``customerId``); runs of machine-made values
#: (base64, hex, token segments) are longer.
_MIN_RUN = 16
#: Secrets no longer in use (a renewed token): an echo may still come for a while.
_MAX_RECENT = 256
_RUNS = re.compile(f"[0-9A-Za-z]{{{_MIN_RUN},}}")


class _Registry:
    """The forms to redact; rebuilt on each change, read without a lock."""

    def __init__(self) -> None:
        # Re-entrant: a release runs from a finalizer, which garbage collection
        # may start while this thread is inside hold() or release().
        self._lock = threading.RLock()
        self._held: Counter[str] = Counter()
        self._recent: deque[str] = deque(maxlen=_MAX_RECENT)
        self.fragments: tuple[str, ...] = ()  # lower-cased, longest first
        self.fragments_bytes: tuple[bytes, ...] = ()
        self.pattern: re.Pattern[str] | None = None
        self.pattern_bytes: re.Pattern[bytes] | None = None

    def hold(self, forms: frozenset[str]) -> None:
        with self._lock:
            self._held.update(forms)
            self._rebuild()

    def release(self, forms: frozenset[str]) -> None:
        with self._lock:
            self._held.subtract(forms)
            for form in forms:
                if self._held[form] <= 0:
                    del self._held[form]
                    self._recent.append(form)
            self._rebuild()

    def _rebuild(self) -> None:
        fragments = sorted({f.lower() for f in (*self._held, *self._recent)}, key=len, reverse=True)
        if not fragments:
            self.pattern = self.pattern_bytes = None
            self.fragments, self.fragments_bytes = (), ()
            return
        encoded = [f.encode("utf-8", "surrogatepass") for f in fragments]
        # Each attribute is swapped whole: a reader sees an old or a new set.
        self.pattern = re.compile("|".join(map(re.escape, fragments)), re.IGNORECASE)
        self.pattern_bytes = re.compile(b"|".join(map(re.escape, encoded)), re.IGNORECASE)
        self.fragments_bytes = tuple(encoded)
        self.fragments = tuple(fragments)


_registry = _Registry()


def _forms(secret: str, runs: bool) -> set[str]:
    forms = set(_RUNS.findall(secret)) if runs else set()
    if len(secret) >= _MIN_WHOLE:
        forms.add(secret)
    return forms


def hold(owner: object, *secrets: str, runs: bool = True) -> Callable[[], object]:
    """Redact ``secrets`` while ``owner`` lives; call the result to let them go sooner.

    Let go, they are still redacted among the most recent released secrets
    (an old token may still be echoed). ``runs=False`` keeps only the whole
    value: for ``user:md5``, whose user name alone is no secret.
    """
    forms = frozenset(form for secret in secrets if secret for form in _forms(secret, runs))
    if not forms:
        return lambda: None
    _registry.hold(forms)
    return weakref.finalize(owner, _registry.release, forms)


def longest() -> int:
    """The length of the longest registered form: how far a secret can straddle a cut."""
    fragments = _registry.fragments
    return len(fragments[0]) if fragments else 0


def holds_secret(text: str) -> bool:
    """Whether ``text`` quotes any registered secret, in any case."""
    fragments = _registry.fragments
    if not fragments:
        return False
    lowered = text.lower()
    return any(fragment in lowered for fragment in fragments)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``<redacted>``."""
    pattern = _registry.pattern
    if pattern is None or not holds_secret(text):
        return text
    return pattern.sub(REDACTED, text)


def redact_bytes(content: bytes) -> bytes:
    """A response body with every registered secret replaced, before anything reads it."""
    pattern, fragments = _registry.pattern_bytes, _registry.fragments_bytes
    if pattern is None or not content:
        return content
    lowered = content.lower()
    if not any(fragment in lowered for fragment in fragments):
        return content
    return pattern.sub(REDACTED.encode(), content)


def redact_value(value: Any) -> Any:
    """Decoded JSON with every registered secret replaced in its texts (keys included).

    For bodies that spell text with ``\\u`` escapes, which ``redact_bytes`` cannot see.
    """
    if _registry.pattern is None:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_value(v) for k, v in value.items()}
    return value
