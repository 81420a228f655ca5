"""What a bulk job hands back: one ``ItemOutcome`` per input item, and running counts.

A spec's reading of one answer is a ``Merged``: a ``Verdict`` per item sent,
plus whatever in the answer looked wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["ItemOutcome", "Lazy", "Merged", "OutcomeStatus", "Prepared", "Progress", "Verdict"]


class OutcomeStatus(str, enum.Enum):
    """How one input item ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Refused by client-side validation: never sent.
    INVALID = "invalid"
    #: Sent, but its fate could not be learned and repeating it was not safe.
    UNKNOWN = "unknown"
    #: The job stopped before the item was sent.
    NOT_ATTEMPTED = "not_attempted"

    def __str__(self) -> str:
        return self.value


class Lazy:
    """A value built on first use: most bulk jobs never look at the success entries."""

    __slots__ = ("_build", "_data")

    def __init__(self, build: Callable[[Any], Any], data: Any) -> None:
        self._build = build
        self._data = data

    def load(self) -> Any:
        """The value, built from the wire data kept."""
        return self._build(self._data)

    def __repr__(self) -> str:
        return "<not read yet>"


class Prepared:
    """An input item checked by its model's rules, held in the wire form it is sent as.

    A bulk job needs only the wire form, the key and whether resending is
    safe; the model is built the first time someone reads ``ItemOutcome.item``.
    """

    __slots__ = ("_model", "idempotent", "key", "wire")

    def __init__(self, wire: dict[str, Any], key: Any, idempotent: bool, model: Any = None) -> None:
        self.wire = wire
        self.key = key
        self.idempotent = idempotent
        self._model = model

    def model(self) -> Any:
        model = self._model
        if model is None:
            model = self._model = self.build(self.wire)
        return model

    def build(self, wire: dict[str, Any]) -> Any:
        """The model of a wire form this class checked (a subclass knows its model)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return repr(self.model())


def _model_of(item: Any) -> Any:
    return item.model() if isinstance(item, Prepared) else item


@attrs.frozen(repr=False)
class ItemOutcome:
    """The one outcome of one input item.

    ``index`` is the item's 0-based position in the input; ``item`` the model
    sent (or the raw input, when it never became one); ``update`` the success
    entry of the answer (built from the answer's JSON on first access);
    ``request_id`` the request that decided it.

    ``line`` is the input file's line when the item came from one
    (``InputRow``), and ``resumed`` marks an outcome an earlier run of a
    journalled job decided (this run did not send the item).

    ``settled`` says whether the outcome is a verdict on this very item: a
    success, the server's per-item refusal, or client-side validation. A
    resumed job never sends a settled item again. An outcome reached without
    one (never sent, a request-wide failure, retries exhausted, ``unknown``)
    is not settled: a later run may send the item again (``unknown`` ones only
    when that is safe or asked for).
    """

    index: int
    _item: Any = attrs.field(eq=_model_of)
    status: OutcomeStatus
    _update: Any = None
    error_code: int | None = None
    error_message: str | None = None
    request_id: str | None = None
    settled: bool = False
    #: The input file's line the item came from (``InputRow``), else None.
    line: int | None = None
    #: The outcome was read from the journal of an earlier run: not sent by this one.
    resumed: bool = False

    @property
    def item(self) -> Any:
        """The model sent (or the raw input, when it never became one)."""
        return _model_of(self._item)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{a.alias}={self.item if a.name == '_item' else getattr(self, a.name)!r}"
            for a in attrs.fields(ItemOutcome)
        )
        return f"ItemOutcome({fields})"

    @property
    def update(self) -> Any:
        """The success entry of the answer, if the item succeeded."""
        value = self._update
        if isinstance(value, Lazy):
            value = value.load()
            object.__setattr__(self, "_update", value)
        return value

    @property
    def ok(self) -> bool:
        """Whether the item succeeded."""
        return self.status is OutcomeStatus.SUCCEEDED

    @property
    def resendable(self) -> bool:
        """Whether the item was certainly not applied and may be sent again as it is.

        True for ``not_attempted`` and for ``failed`` without a verdict on the
        item (a request-wide refusal: a 401, retries spent on 429 / 503 / 521).
        A queue-fed worker requeues exactly these; ``unknown`` ones may have
        been applied, and settled ones were decided.
        """
        status = self.status
        return status is OutcomeStatus.NOT_ATTEMPTED or (
            status is OutcomeStatus.FAILED and not self.settled
        )


@attrs.frozen(kw_only=True)
class Progress:
    """Running counts, passed to ``on_progress`` at least once per completed chunk.

    ``watermark`` is the input index below which every item has its final
    outcome: what a resumable job checkpoints.
    """

    read: int
    sent: int
    succeeded: int
    failed: int
    invalid: int
    unknown: int
    not_attempted: int
    requests: int
    retried_requests: int
    split_requests: int
    elapsed: float
    items_per_second: float
    watermark: int
    concurrency: int
    chunk_size: int


#: What an answer says of one item of the chunk sent, before the engine's own rules:
#: ``(index, item, status, update, error_code, error_message)``. A tuple: one per item.
Verdict = tuple[int, Any, OutcomeStatus, Any, "int | None", "str | None"]


@attrs.frozen
class Merged:
    """A spec's reading of one answer: a verdict per item sent, plus oddities."""

    verdicts: list[Verdict]
    anomalies: list[str] = attrs.field(factory=list)
