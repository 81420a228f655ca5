"""The merged result of a bulk job, and its writers (one layout for every front end)."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .._exceptions import MAX_QUOTED, JournalIOError, excerpt
from ._outcomes import ItemOutcome, OutcomeStatus

__all__ = ["MAX_ANOMALIES", "BulkReport", "csv_cell", "failure_columns", "write_csv"]

#: How many anomalies a report keeps as text (all are counted).
MAX_ANOMALIES = 20
#: How many distinct error codes ``failures_by_code`` names; the rest count as "other".
MAX_CODES = 1000


class BulkReport:
    """The merged result of a bulk job.

    The counts always add up to ``total``. The outcomes of items that did not
    succeed are kept (``failures()``); every outcome only with ``keep_all``.
    ``stop_reason`` says why a job stopped early (None when it ran through).
    """

    def __init__(
        self,
        *,
        keep_all: bool = False,
        keep_failures: bool = True,
        describe: Callable[[Any], dict[str, Any]],
    ):
        self.keep_all = keep_all
        self.keep_failures = keep_failures
        self._describe = describe
        self._wire: Callable[[Any], Any] = lambda item: item
        self.total = 0
        self.succeeded = 0
        self.failed = 0
        self.invalid = 0
        self.unknown = 0
        self.not_attempted = 0
        self.failures_by_code: Counter[int | str] = Counter()
        self.requests = 0
        self.retried_requests = 0
        self.split_requests = 0
        self.elapsed = 0.0
        self.peak_held = 0
        self.held_limit = 0
        self.stop_reason: str | None = None
        #: A sample of the oddities seen in the answers (at most ``MAX_ANOMALIES``).
        self.anomalies: list[str] = []
        #: How many oddities there were in all.
        self.anomaly_count = 0
        #: Of ``total``, the items an earlier run of a journalled job had finished.
        self.resumed = 0
        #: The job validated its input and sent nothing (``dry_run=True``).
        self.dry_run = False
        #: Whether the job read its input to the end. A stop (``OutcomeStream.stop``,
        #: Ctrl-C) leaves the rest unread: the counts then cover what was read.
        self.input_complete = True
        #: How many items the input holds, when the caller knows (the command line
        #: counts its file's rows): the summary then says how many were not read.
        self.input_total: int | None = None
        self._failures: list[ItemOutcome] = []
        self._outcomes: list[ItemOutcome] = []
        #: The journal of the job, if it had one.
        self.journal: str | None = None
        #: Why the journal failed (the job stopped there), if it did.
        self.journal_error: str | None = None
        #: Whether the journal holds every outcome this run knew (False after a failure).
        self.journal_complete = True
        #: With a journal: every non-succeeded row of the whole input, read from it.
        self._journal_rows: Callable[[], Iterator[dict[str, Any]]] | None = None

    @property
    def items_per_second(self) -> float:
        """Final outcomes per second of the job's run time."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def unread(self) -> int | None:
        """Items of the input the job never read (None when ``input_total`` is unknown)."""
        if self.input_total is None:
            return None
        return 0 if self.input_complete else max(0, self.input_total - self.total)

    @property
    def ok(self) -> bool:
        """Whether every item succeeded."""
        return self.succeeded == self.total

    def _add(self, outcome: ItemOutcome) -> None:
        status = outcome.status
        self.total += 1
        if outcome.resumed:
            self.resumed += 1
        if status is OutcomeStatus.SUCCEEDED:
            self.succeeded += 1
        else:
            if status is OutcomeStatus.FAILED:
                self.failed += 1
            elif status is OutcomeStatus.INVALID:
                self.invalid += 1
            elif status is OutcomeStatus.UNKNOWN:
                self.unknown += 1
            else:
                self.not_attempted += 1
            if status is not OutcomeStatus.NOT_ATTEMPTED:
                label: int | str = (
                    outcome.error_code if outcome.error_code is not None else status.value
                )
                codes = self.failures_by_code
                if label not in codes and len(codes) >= MAX_CODES:
                    label = "other"  # a server inventing a code per item: counted, bounded
                codes[label] += 1
            if self.keep_failures and not (self.dry_run and status is OutcomeStatus.NOT_ATTEMPTED):
                self._failures.append(outcome)  # (a dry run's valid items are not failures)
        if self.keep_all:
            self._outcomes.append(outcome)

    def failures(self) -> list[ItemOutcome]:
        """Every item that did not succeed, in input order."""
        return sorted(self._failures, key=lambda o: o.index)

    def outcomes(self) -> list[ItemOutcome]:
        """Every outcome in input order (needs ``keep_all=True``)."""
        if not self.keep_all:
            raise RuntimeError("outcomes(): the job ran without keep_all=True")
        return sorted(self._outcomes, key=lambda o: o.index)

    def summary(self) -> dict[str, Any]:
        """The counts as a JSON-ready dict."""
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "invalid": self.invalid,
            "unknown": self.unknown,
            "not_attempted": self.not_attempted,
            "requests": self.requests,
            "retried_requests": self.retried_requests,
            "split_requests": self.split_requests,
            "elapsed_seconds": round(self.elapsed, 3),
            "items_per_second": round(self.items_per_second, 1),
            "failures_by_code": {str(k): v for k, v in self.failures_by_code.items()},
            "resumed": self.resumed,
            "dry_run": self.dry_run,
            "stop_reason": self.stop_reason,
            "input_complete": self.input_complete,
            **(
                {"input_total": self.input_total, "unread": self.unread}
                if self.input_total is not None
                else {}
            ),
            "anomaly_count": self.anomaly_count,
            "anomalies": list(self.anomalies),
            **(
                {
                    "journal": self.journal,
                    "journal_error": self.journal_error,
                    "journal_complete": self.journal_complete,
                }
                if self.journal is not None
                else {}
            ),
        }

    def _row(self, outcome: ItemOutcome) -> dict[str, Any]:
        return {
            "index": outcome.index,
            "line": outcome.line,
            **self._describe(outcome._item),
            "status": outcome.status.value,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
            "request_id": outcome.request_id,
        }

    def _rows(self) -> Iterator[dict[str, Any]]:
        """What the writers write: from the journal when there is one (the whole input)."""
        if self.keep_all:
            return (self._row(o) | {"item": self._wire(o._item)} for o in self.outcomes())
        if self._journal_rows is not None:
            if self.journal_complete:  # even after a failure, if the last write made it
                return self._journal_rows()
            if not self.keep_failures:
                raise JournalIOError(
                    f"the rows cannot be listed: the journal {self.journal} does not hold "
                    "every outcome of this run, and the report kept none in memory"
                )
        return (self._row(o) | {"item": self._wire(o._item)} for o in self.failures())

    def to_json(self, path: str | Path) -> None:
        """The summary and each non-succeeded outcome (every one with ``keep_all``), streamed.

        A journalled job's outcomes are read from its journal: the whole input,
        earlier runs included, in flat memory.
        """
        with Path(path).open("w", encoding="utf-8") as out:
            self.write_json(out)

    def write_json(self, out: IO[str]) -> None:
        """``to_json`` to an open text stream (a pipe, standard output).

        When the outcomes cannot be listed (a journal left incomplete by a full
        disk, and none kept in memory), the summary is written with an empty
        ``outcomes`` and ``outcomes_missing`` saying why.
        """
        summary = self.summary()
        try:
            rows: Iterable[dict[str, Any]] = self._rows()
        except JournalIOError as exc:
            rows, summary = (), {**summary, "outcomes_missing": str(exc)}
        head = json.dumps(summary, indent=2)
        out.write(head[:-2] + ',\n  "outcomes": [')
        for n, row in enumerate(rows):
            out.write(("," if n else "") + "\n    ")
            out.write(_json(row))
        out.write("\n  ]\n}\n")

    def to_csv(self, path: str | Path) -> None:
        """One row per non-succeeded outcome (every one with ``keep_all``), streamed.

        The layout is ``failure_columns``: the same for every job and the command line.
        """
        with Path(path).open("w", encoding="utf-8", newline="") as out:
            self.write_csv(out)

    def write_csv(self, out: IO[str]) -> None:
        """``to_csv`` to an open text stream."""
        columns = failure_columns([c for c in self._describe(None) if c != "line"])
        write_csv(out, columns, self._rows())

    def __repr__(self) -> str:
        return (
            f"<BulkReport total={self.total} succeeded={self.succeeded} failed={self.failed} "
            f"invalid={self.invalid} unknown={self.unknown} not_attempted={self.not_attempted}"
            f"{' stopped: ' + self.stop_reason if self.stop_reason else ''}>"
        )


def failure_columns(ref_columns: Sequence[str]) -> list[str]:
    """The one layout of a failures CSV, for the library's reports and the command line.

    ``line`` is the input file's line where the item came from one (empty otherwise).
    """
    return ["index", "line", *ref_columns, "status", "error_code", "error_message", "request_id"]


#: Leading characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value made safe for a spreadsheet: text that would run as a formula is quoted with '."""
    if isinstance(value, str):
        if value.startswith(_FORMULA_START):
            value = "'" + value
        return excerpt(value, limit=MAX_QUOTED * 4)
    return value


def write_csv(out: IO[str], columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Rows as CSV under ``columns``, every text cell escaped by ``csv_cell``."""
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in columns])


def _json(row: dict[str, Any]) -> str:
    """A row as strict JSON: a float JSON cannot hold (NaN, Infinity) is written as text."""
    try:
        return json.dumps(row, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(row), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
