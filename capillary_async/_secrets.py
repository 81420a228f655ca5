"""Every credential this process holds, so that no text of ours can quote one.

Credential objects register the forms of their secret that travel on the wire
(a Basic header's base64, the ``user:md5`` it encodes, the MD5, a token, an
OAuth secret) as they are made, and an OAuth flow each token it receives. A
server may echo any of them back in a body, a header or a malformed status
line, and spelled differently: JSON escapes (``\\u003d`` for ``=``), base64url,
no padding, upper-case hex. So each secret is also kept as its runs of letters
and digits, and matched without regard to case: whatever the spelling, the bulk
of the secret is found and replaced.

``redact`` runs wherever foreign text becomes ours (``excerpt``), and
``redact_bytes`` on every response body before it is parsed.
"""

from __future__ import annotations

import re
import threading
from collections import deque

__all__ = ["REDACTED", "holds_secret", "longest", "redact", "redact_bytes", "register"]

REDACTED = "<redacted>"
#: Shorter values, or runs of one, are too common in ordinary text to be told apart.
_MIN_RUN = 8
#: Tokens come and go; the most recent ones are enough to recognise an echo.
_MAX_TOKENS = 64
_RUNS = re.compile(f"[0-9A-Za-z]{{{_MIN_RUN},}}")


class _Registry:
    """The forms to redact; rebuilt on each registration, read without a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lasting: set[str] = set()
        self._tokens: deque[str] = deque(maxlen=_MAX_TOKENS)
        self.fragments: tuple[str, ...] = ()  # lower-cased, longest first
        self.fragments_bytes: tuple[bytes, ...] = ()
        self.pattern: re.Pattern[str] | None = None
        self.pattern_bytes: re.Pattern[bytes] | None = None

    def add(self, forms: set[str], *, token: bool) -> None:
        with self._lock:
            if token:
                self._tokens.extend(sorted(forms - set(self._tokens)))
            else:
                self._lasting.update(forms)
            fragments = sorted(
                {f.lower() for f in (*self._lasting, *self._tokens)}, key=len, reverse=True
            )
            encoded = [f.encode("utf-8", "surrogatepass") for f in fragments]
            # Each attribute is swapped whole: a reader sees an old or a new set.
            self.pattern = re.compile("|".join(map(re.escape, fragments)), re.IGNORECASE)
            self.pattern_bytes = re.compile(b"|".join(map(re.escape, encoded)), re.IGNORECASE)
            self.fragments_bytes = tuple(encoded)
            self.fragments = tuple(fragments)


_registry = _Registry()


def _forms(secret: str, runs: bool) -> set[str]:
    forms = set(_RUNS.findall(secret)) if runs else set()
    if len(secret) >= _MIN_RUN:
        forms.add(secret)
    return forms


def register(*secrets: str, token: bool = False, runs: bool = True) -> None:
    """Remember ``secrets`` for redaction (``token=True``: among the recent tokens only).

    ``runs=False`` keeps only the whole value: for ``user:md5``, whose user name
    alone is no secret.
    """
    forms = {form for secret in secrets if secret for form in _forms(secret, runs)}
    if forms:
        _registry.add(forms, token=token)


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
