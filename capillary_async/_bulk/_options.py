"""``BulkOptions``: how a bulk job runs, in one frozen object."""

from __future__ import annotations

import math
import os
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import attrs

from .._config import RetryPolicy, Timeouts
from .._types import UNSET, _Unset
from .._wire import checked_headers
from ._pacing import MIN_RATE, RetryBudget

if TYPE_CHECKING:
    from ._outcomes import Progress

__all__ = ["BulkOptions", "BulkOptionsDict"]


def _at_least_one(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a whole number of at least 1")

    return check


def _check_rate(_instance: Any, _attribute: Any, value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not MIN_RATE <= value < math.inf
    ):
        # Slower than this is a typo, and a job that would wait for days.
        raise ValueError(
            f"rate_limit: must be at least {MIN_RATE} requests per second (one every 17 minutes)"
        )


def _check_flush(_instance: Any, _attribute: Any, value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf
    ):
        raise ValueError("flush_after: must be a positive number of seconds, or None")


def _flag(_instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bool):  # "false" is true: a flag is True or False, nothing else
        raise TypeError(f"{attribute.name}: must be True or False")


def _optional_flag(_instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{attribute.name}: must be True, False or None")


def _instance_of(kind: type[Any]) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, attribute: Any, value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{attribute.name}: must be a {kind.__name__}, or None")

    return check


def _check_timeout(_instance: Any, _attribute: Any, value: Any) -> None:
    if isinstance(value, (_Unset, Timeouts)) or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError("timeout: must be a Timeouts, a positive number of seconds, or None")


def _check_callable(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError("on_progress: must be a function (or coroutine function), or None")


def _check_journal(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.fspath(value)):
        raise TypeError("journal: must be a path (a str or os.PathLike), or None")


def _frozen_headers(value: Any) -> Mapping[str, str] | None:
    """Headers checked now (names and values a request may carry), kept read-only."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError("headers: expected a mapping of header names to values, or None")
    return types.MappingProxyType(checked_headers(value))


@attrs.frozen(kw_only=True)
class BulkOptions:
    """How a bulk job runs; every ``bulk_update_*`` / ``stream_update_*`` takes one.

    The same names are accepted as keyword arguments, which win over ``options``:
    ``bulk_update_expiry(items, options=nightly, dry_run=True)``.

    - ``chunk_size``: items per request (updateRedemption takes one).
    - ``concurrency``: requests in flight at once; about ``concurrency x
      chunk_size`` items are held in memory, whatever the input size.
    - ``rate_limit``: requests per second, at most.
    - ``flush_after``: seconds a partial chunk waits for more input.
    - ``fail_fast``: stop at the first chunk that fails for good.
    - ``keep_all`` / ``keep_failures``: which outcomes the report keeps (a
      bulk call keeps failures, a stream keeps none, unless told).
    - ``retry``, ``retry_budget``, ``timeout``: per job, over the client's.
    - ``headers``: sent with every request of the job, over the client's
      (attribution headers for one tenant, say).
    - ``on_progress``: called (or awaited) with a ``Progress`` per chunk.
    - ``journal``: a SQLite file recording every item's outcome; run again
      with it and the same input to send only what is not final.
    - ``retry_unknown``: on resume, also resend items whose fate is unknown and
      that are not safe to repeat (FIXED_DAYS / FIXED_MONTHS).
    - ``dry_run``: validate everything, send nothing.
    - ``preflight``: before the first item is read (and once the journal is
      locked), prove the target and the credentials with ``client.check()``,
      one request that changes nothing; its error (a wrong URL, password or
      key) is raised, and nothing is sent. Not in a dry run.
    """

    chunk_size: int = attrs.field(default=100, validator=_at_least_one("chunk_size"))
    concurrency: int = attrs.field(default=8, validator=_at_least_one("concurrency"))
    rate_limit: float | None = attrs.field(default=None, validator=_check_rate)
    flush_after: float | None = attrs.field(default=1.0, validator=_check_flush)
    fail_fast: bool = attrs.field(default=False, validator=_flag)
    keep_all: bool = attrs.field(default=False, validator=_flag)
    keep_failures: bool | None = attrs.field(default=None, validator=_optional_flag)
    retry: RetryPolicy | None = attrs.field(default=None, validator=_instance_of(RetryPolicy))
    retry_budget: RetryBudget | None = attrs.field(
        default=None, validator=_instance_of(RetryBudget)
    )
    timeout: Timeouts | float | _Unset | None = attrs.field(default=UNSET, validator=_check_timeout)
    on_progress: Callable[[Progress], object] | None = attrs.field(
        default=None, eq=False, validator=_check_callable
    )
    journal: str | os.PathLike[str] | None = attrs.field(default=None, validator=_check_journal)
    retry_unknown: bool = attrs.field(default=False, validator=_flag)
    dry_run: bool = attrs.field(default=False, validator=_flag)
    headers: Mapping[str, str] | None = attrs.field(
        default=None, converter=_frozen_headers, eq=False
    )
    preflight: bool = attrs.field(default=False, validator=_flag)

    @classmethod
    def build(cls, options: BulkOptions | None, overrides: BulkOptionsDict) -> BulkOptions:
        """``options`` with the keyword arguments given on top."""
        if not overrides:
            return options if options is not None else cls()
        unknown = set(overrides) - set(attrs.fields_dict(cls))
        if unknown:
            raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
        if options is None:
            return cls(**overrides)
        return attrs.evolve(options, **overrides)


class BulkOptionsDict(TypedDict, total=False):
    """The keyword form of ``BulkOptions``."""

    chunk_size: int
    concurrency: int
    rate_limit: float | None
    flush_after: float | None
    fail_fast: bool
    keep_all: bool
    keep_failures: bool | None
    retry: RetryPolicy | None
    retry_budget: RetryBudget | None
    timeout: Timeouts | float | _Unset | None
    on_progress: Callable[[Progress], object] | None
    journal: str | os.PathLike[str] | None
    retry_unknown: bool
    dry_run: bool
    headers: Mapping[str, str] | None
    preflight: bool
