"""The job journal: SQLite (WAL), written off the event loop, one row per input row.

A row is absent while pending, ``in_flight`` from just before its chunk is
sent, and has an outcome (``succeeded``, ``failed``, ``invalid``, ``unknown``,
``not_attempted``) once its chunk completes. Only a verdict on the row itself
is final: a success, the server's refusal of that row (``settled``), or
client-side validation. A rerun sends every other row again, except that a row
whose fate is unknown is resent only when that is safe or asked for
(``resume``). The journal is tied to its input file and target by a
fingerprint, and owned by one process at a time (``JournalLock``).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import sqlite3
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._exceptions import MAX_QUOTED, JournalError, JournalIOError, excerpt
from ._lock import shown
from ._schema import connect
from ._sqlite import _code, _legacy_ref, _refs, sqlite_reason, stored_ref

__all__ = ["Entry", "Journal", "Journalled", "Resume", "fingerprint", "resume", "stored_ref"]

T = TypeVar("T")

#: Longest ref kept (a malformed row's "ref" can be anything the file held).
_REF_LIMIT = 200
_STATES = (
    "SELECT idx, state, settled, idempotent, error_code, error_message, request_id, refs, "
    "digest FROM items WHERE idx > ? ORDER BY idx LIMIT ?"
)
_STATES_V2 = _STATES.replace("refs, digest", "refs, NULL")
_IN_FLIGHT_MESSAGE = "in flight when a run stopped: sent, and it may have been applied"


def fingerprint(kind: str, path: str, target: str) -> str:
    """What a journal is tied to: the job kind, the input's bytes and the target URL."""
    digest = hashlib.sha256()
    digest.update(f"{kind}\0{target}\0".encode(errors="surrogateescape"))
    with Path(path).open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# -- what a rerun does ----------------------------------------------------------------------


class Resume(enum.Enum):
    """What a rerun does with a journalled row."""

    SKIP = "skip"  # final, or unknown and not safe to repeat
    SEND = "send"
    UNKNOWN = "unknown"  # left in flight, not safe to repeat: record it unknown


def resume(state: str, settled: bool | None, idempotent: bool, *, retry_unknown: bool) -> Resume:
    """The one rule for resuming: only verdicts are final; unknown fates resend when safe.

    ``failed`` without a verdict (a 401, retries run out on 503s, a stopped
    job) was never applied, so it is sent again; ``settled`` is None in
    journals from before the flag, and those rows are sent again too.
    """
    if state in ("succeeded", "invalid") or (state == "failed" and settled):
        return Resume.SKIP
    if state in ("failed", "not_attempted"):
        return Resume.SEND
    if state in ("unknown", "in_flight"):
        if idempotent or retry_unknown:
            return Resume.SEND
        return Resume.UNKNOWN if state == "in_flight" else Resume.SKIP
    return Resume.SKIP  # a state this version does not know: leave the row alone


# -- rows ---------------------------------------------------------------------------------------


class Entry:
    """One row's outcome, as recorded (a plain slotted class: one is made per row)."""

    __slots__ = (
        "digest",
        "error_code",
        "error_message",
        "index",
        "known",
        "line",
        "ref_id",
        "ref_type",
        "request_id",
        "settled",
        "state",
    )

    def __init__(  # noqa: PLR0917 - the row's columns, in their order
        self,
        index: int,
        line: int,
        state: str,
        ref_id: Any = None,
        ref_type: Any = None,
        error_code: Any = None,
        error_message: str | None = None,
        request_id: str | None = None,
        settled: bool = False,
        digest: str | None = None,
        known: bool = False,
    ) -> None:
        self.index = index
        self.line = line
        self.state = state
        self.ref_id = ref_id
        self.ref_type = ref_type
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.settled = settled
        #: For an input that is not a file: what the item held (``item_digest``).
        self.digest = digest
        #: This run marked the row in flight: it exists, and holds its refs.
        self.known = known


@attrs.frozen
class Journalled:
    """What a rerun needs to know of a journalled row."""

    index: int
    state: str
    settled: bool | None
    idempotent: bool
    error_code: Any = None
    error_message: str | None = None
    request_id: str | None = None
    #: The item's refs as recorded (JSON ``[ref id, ref type]``), if any.
    refs: str | None = None
    #: The item's content as recorded (``item_digest``), if any.
    digest: str | None = None


@attrs.frozen
class Failure:
    """A row that did not succeed, for the failures CSV."""

    index: int
    line: int
    ref_id: Any
    ref_type: Any
    state: str
    error_code: Any
    error_message: str | None
    request_id: str | None


# -- the journal ----------------------------------------------------------------------------------


class Journal:
    """One job's journal; every call runs in a worker thread, one at a time.

    A failure to write or read it during a run (a full disk, an I/O error) is a
    ``JournalIOError`` in our words; a failed write changes nothing.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, name: str | None = None) -> None:
        self.path = path
        #: How messages name it ("journal job.db"), control characters neutralised.
        self.name = name or f"journal {shown(path)}"
        self._db = connection
        self._limiter = anyio.CapacityLimiter(1)
        # A dry run reads a journal of format 2 as it is, without digests.
        columns = {row[1] for row in connection.execute("PRAGMA table_info(items)")}
        self._states_query = _STATES if "digest" in columns else _STATES_V2

    @classmethod
    async def open(
        cls,
        path: str | Path,
        fingerprint: str,
        *,
        name: str | None = None,
        read_only: bool = False,
        about: Mapping[str, str] | None = None,
    ) -> Journal:
        """Open or create; refuses anything that is not this job's journal, changing nothing.

        ``read_only`` (a dry run) opens an existing journal without writing to it at all.
        ``about`` is kept in a new journal to explain a later mismatch: ``input`` (the
        file's fingerprint without its shard) and ``shard`` (``"1/3"``, or ``"all"``).
        """
        journal_path = Path(path)
        name = name or f"journal {shown(journal_path)}"
        connection = await anyio.to_thread.run_sync(
            connect, journal_path, fingerprint, name, read_only, dict(about or {})
        )
        return cls(journal_path, connection, name)

    async def _run(self, call: Callable[..., T], *args: Any, doing: str = "written") -> T:
        try:
            return await anyio.to_thread.run_sync(call, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise JournalIOError(
                f"the {self.name} could not be {doing} ({sqlite_reason(exc)})"
            ) from None

    async def close(self) -> None:
        await self._run(self._db.close)

    # -- writing -------------------------------------------------------------------------

    async def mark_in_flight(
        self, rows: Sequence[tuple[int, int, bool, Any, Any, str | None]]
    ) -> None:
        """(index, line, idempotent, ref id, ref type, digest) of rows about to be sent.

        Committed before the request is written.
        """
        batch: list[tuple[Any, ...]]
        if any(row[5] is not None for row in rows):
            sql = _MARK
            batch = [(i, line, int(idem), _refs(r, t), d) for i, line, idem, r, t, d in rows]
        else:  # a file's rows carry no digest: four columns bind faster than five
            sql = _MARK_NO_DIGEST
            batch = [(i, line, int(idem), _refs(r, t)) for i, line, idem, r, t, _ in rows]

        def write() -> None:
            with self._transaction():
                self._db.executemany(sql, batch)

        await self._run(write)

    async def unmark(self, indexes: Sequence[int]) -> None:
        """Rows marked in flight whose attempt certainly was not applied: ``not_attempted``."""
        if not indexes:
            return
        batch = [(index,) for index in indexes]

        def write() -> None:
            with self._transaction():
                self._db.executemany(
                    "UPDATE items SET state = 'not_attempted' "
                    "WHERE idx = ? AND state = 'in_flight'",
                    batch,
                )

        await self._run(write)

    async def record(self, entries: Iterable[Entry]) -> None:
        """Outcomes; messages are bounded and made encodable, refs stored as JSON."""
        # A chunk's rows share a request id (and often a message): each quoted once.
        quoted: dict[tuple[str, int], str] = {}

        def quote(text: str | None, limit: int) -> str | None:
            if text is None:
                return None
            done = quoted.get((text, limit))
            if done is None:
                done = quoted[text, limit] = excerpt(text, limit)
            return done

        # A succeeded row this run marked needs only its state, request id and
        # verdict: runs of consecutive ones with one request id (a chunk) are
        # written by one statement each, not one per row.
        runs: list[list[Any]] = []  # [request id, first index, last index, entries]
        rest: list[Entry] = []
        entries = list(entries)
        once = len({e.index for e in entries}) == len(entries)  # else: in order, one by one
        for e in sorted(entries, key=_index) if once else entries:
            if not (once and e.known and e.state == "succeeded" and e.settled) or (
                e.digest is not None or e.error_code is not None or e.error_message is not None
            ):
                rest.append(e)
                continue
            request_id = quote(e.request_id, _REF_LIMIT)
            last = runs[-1] if runs else None
            if last is not None and last[0] == request_id and last[2] == e.index - 1:
                last[2] = e.index
                last[3].append(e)
            else:
                runs.append([request_id, e.index, e.index, [e]])
        if not runs and not rest:
            return

        def rows(of: Iterable[Entry]) -> list[tuple[Any, ...]]:
            return [
                (
                    e.index,
                    e.line,
                    e.state,
                    _refs(e.ref_id, e.ref_type),
                    _code(e.error_code),
                    quote(e.error_message, MAX_QUOTED),
                    quote(e.request_id, _REF_LIMIT),
                    int(e.settled),
                    e.digest,
                )
                for e in of
            ]

        batch = rows(rest)

        def write() -> None:
            db = self._db
            with self._transaction():
                for request_id, first, last, run in runs:
                    done = db.execute(
                        "UPDATE items SET state = 'succeeded', error_code = NULL, "
                        "error_message = NULL, request_id = ?, settled = 1 "
                        "WHERE idx BETWEEN ? AND ?",
                        (request_id, first, last),
                    ).rowcount
                    if done != last - first + 1:  # rows missing after all: written in full
                        batch.extend(rows(run))
                db.executemany(_RECORD, batch)

        await self._run(write)

    async def add_counters(self, **counts: int) -> None:
        """Accumulate run counters (requests...) across runs."""

        def write() -> None:
            with self._transaction():
                for key, value in counts.items():
                    row = self._db.execute(
                        "SELECT value FROM meta WHERE key = ?", (f"count:{key}",)
                    ).fetchone()
                    total = (int(row[0]) if row else 0) + value
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"count:{key}", str(total))
                    )

        await self._run(write)

    # -- reading -------------------------------------------------------------------------

    async def states(self, batch: int = 5000) -> AsyncGenerator[Journalled, None]:
        """Every journalled row, in index order, read in batches (flat memory)."""
        last = -1
        while True:
            rows = await self._run(
                lambda after: self._db.execute(
                    self._states_query,
                    (after, batch),
                ).fetchall(),
                last,
                doing="read",
            )
            if not rows:
                return
            for idx, state, settled, idempotent, code, message, request_id, refs, digest in rows:
                yield Journalled(
                    idx,
                    state,
                    None if settled is None else bool(settled),
                    bool(idempotent),
                    code,
                    message,
                    request_id,
                    refs,
                    digest,
                )
            last = rows[-1][0]

    async def summary(self) -> dict[str, Any]:
        """Counts by state, failures by code and the accumulated counters."""

        def read() -> dict[str, Any]:
            counts = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state"))
            codes = self._db.execute(
                "SELECT COALESCE(CAST(error_code AS TEXT), "
                "CASE state WHEN 'in_flight' THEN 'unknown' ELSE state END), COUNT(*) "
                "FROM items WHERE state NOT IN ('succeeded', 'not_attempted') GROUP BY 1"
            ).fetchall()
            meta = dict(self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'count:%'"))
            return {
                "states": counts,
                "failures_by_code": dict(codes),
                "counters": {k.split(":", 1)[1]: int(v) for k, v in meta.items()},
            }

        return await self._run(read, doing="read")

    @staticmethod
    def read_failures(path: Path, name: str) -> Iterator[Failure]:
        """Every row of a closed journal that did not succeed, in order, read in batches."""
        if not path.is_file():
            raise JournalError(f"{name} is gone; its rows cannot be read")
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            yield from _failures(db)
        except sqlite3.Error as exc:
            raise JournalIOError(f"the {name} could not be read ({sqlite_reason(exc)})") from None
        finally:
            db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


_MARK = (
    "INSERT INTO items (idx, line, state, idempotent, refs, digest) "
    "VALUES (?, ?, 'in_flight', ?, ?, ?) ON CONFLICT(idx) DO UPDATE SET "
    "state = 'in_flight', idempotent = excluded.idempotent, "
    "refs = COALESCE(excluded.refs, refs), "
    "digest = COALESCE(excluded.digest, digest)"
)
_MARK_NO_DIGEST = (
    "INSERT INTO items (idx, line, state, idempotent, refs) "
    "VALUES (?, ?, 'in_flight', ?, ?) ON CONFLICT(idx) DO UPDATE SET "
    "state = 'in_flight', idempotent = excluded.idempotent, "
    "refs = COALESCE(excluded.refs, refs)"
)
_RECORD = (
    "INSERT INTO items (idx, line, state, refs, error_code, error_message, "
    "request_id, settled, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(idx) DO UPDATE SET state = excluded.state, "
    "refs = COALESCE(excluded.refs, refs), "
    "digest = COALESCE(excluded.digest, digest), "
    "error_code = excluded.error_code, error_message = excluded.error_message, "
    "request_id = excluded.request_id, settled = excluded.settled"
)


def _index(entry: Entry) -> int:
    return entry.index


def _failures(db: sqlite3.Connection, batch: int = 5000) -> Iterator[Failure]:
    last = -1
    while True:
        rows = db.execute(
            "SELECT idx, line, refs, ref_id, ref_type, state, error_code, error_message, "
            "request_id FROM items WHERE idx > ? AND state != 'succeeded' "
            "ORDER BY idx LIMIT ?",
            (last, batch),
        ).fetchall()
        if not rows:
            return
        for idx, line, refs, old_id, old_type, state, code, message, request_id in rows:
            first, second = (
                json.loads(refs)
                if refs is not None
                else (_legacy_ref(old_id), _legacy_ref(old_type))
            )
            if state == "in_flight":  # a run stopped before its answer came
                yield Failure(
                    idx,
                    line,
                    first,
                    second,
                    "unknown",
                    code,
                    message or _IN_FLIGHT_MESSAGE,
                    None,
                )
            else:
                yield Failure(idx, line, first, second, state, code, message, request_id)
        last = rows[-1][0]


class _Transaction:
    """All or nothing; a failed COMMIT (a full disk) is rolled back, never left open."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            try:
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        else:
            self._rollback()  # the statement's own error is the one that matters

    def _rollback(self) -> None:
        if self.db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
