"""Logging: one logger per part, each a child of ``capillary_async``.

``capillary_async.client`` (each HTTP attempt), ``.bulk`` (jobs), ``.journal``
(resumable jobs), ``.redis`` (the shared pace): a user raises or silences one
alone. Records carry structured fields in ``extra`` (``request_id``,
``method``, ``path``, ``status``, ``attempt``, ``elapsed_ms``; a job's counts).
The package logs nothing anywhere by itself (a ``NullHandler``), unless
``CAPILLARY_LOG=debug`` (or ``info``, ``warning``) is set, which installs one
readable handler on standard error, as ``OPENAI_LOG`` does. Secrets never reach
a record: nothing logged is a header value, and bodies (DEBUG only) are redacted.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

__all__ = ["get_logger", "setup_from_env"]

ROOT = logging.getLogger("capillary_async")
ROOT.addHandler(logging.NullHandler())

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(part: str) -> logging.Logger:
    """The logger of one part of the package (``client``, ``bulk``, ``journal``...)."""
    return logging.getLogger(f"capillary_async.{part}")


def setup_from_env(env: Mapping[str, str] | None = None) -> logging.Handler | None:
    """Install the ``CAPILLARY_LOG`` handler, once; returns it (None when not asked for)."""
    value = (os.environ if env is None else env).get("CAPILLARY_LOG", "").strip().lower()
    if not value:
        return None
    level = _LEVELS.get(value)
    if level is None:
        print(  # noqa: T201 - the only way to say a switch for logging is wrong
            "capillary_async: CAPILLARY_LOG must be debug, info or warning; ignored",
            file=sys.stderr,
        )
        return None
    for handler in ROOT.handlers:
        if getattr(handler, "_capillary_env", False):
            return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler._capillary_env = True  # type: ignore[attr-defined]
    ROOT.addHandler(handler)
    ROOT.setLevel(level)
    return handler
