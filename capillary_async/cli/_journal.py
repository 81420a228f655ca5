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

import enum
import hashlib
import json
import os
import socket
import sqlite3
import sys
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._exceptions import excerpt

__all__ = [
    "Entry",
    "Failure",
    "Journal",
    "JournalError",
    "JournalLock",
    "JournalMismatchError",
    "Journalled",
    "Resume",
    "fingerprint",
    "resume",
    "stored_ref",
]

T = TypeVar("T")

#: 2 added ``settled`` and ``refs``; a journal without them (format 1) is upgraded in place.
FORMAT = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"
_V1_COLUMNS = frozenset(
    {"idx", "line", "state", "idempotent", "ref_id", "ref_type", "error_code"}
    | {"error_message", "request_id"}
)
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    idx INTEGER PRIMARY KEY,
    line INTEGER NOT NULL,
    state TEXT NOT NULL,
    idempotent INTEGER,
    ref_id TEXT,            -- format 1 only: strings as they were, other values as JSON
    ref_type TEXT,
    error_code INTEGER,
    error_message TEXT,
    request_id TEXT,
    settled INTEGER,        -- 1: a verdict on this row; NULL in rows of format 1
    refs TEXT               -- JSON [ref id, ref type]
);
"""
#: Longest ref kept (a malformed row's "ref" can be anything the file held).
_REF_LIMIT = 200
_IN_FLIGHT_MESSAGE = "in flight when a run stopped: sent, and it may have been applied"


class JournalError(Exception):
    """The journal cannot be used (busy, damaged, not a journal): nothing was sent."""


class JournalMismatchError(JournalError):
    """The journal belongs to another input file or target."""


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


@attrs.frozen
class Entry:
    """One row's outcome, as recorded."""

    index: int
    line: int
    state: str
    ref_id: Any = None
    ref_type: Any = None
    error_code: Any = None
    error_message: str | None = None
    request_id: str | None = None
    settled: bool = False


@attrs.frozen
class Journalled:
    """What a rerun needs to know of a journalled row."""

    index: int
    state: str
    settled: bool | None
    idempotent: bool


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


# -- one process per journal ------------------------------------------------------------------


class JournalLock:
    """An OS lock on ``<journal>.lock``, held for a whole run: one process per journal.

    The lock is the kernel's (``flock``), so it goes with the process however it
    ends; the file keeps the holder's pid and host for the message a second
    process prints. The file is left in place: removing it would let a process
    that opened it just before lock a file nobody else can see.
    """

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.path = journal.with_name(journal.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``JournalError`` naming the holder at once."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(
                f"journal {self.journal}: cannot create its lock file {self.path} "
                f"({exc.strerror or 'error'})"
            ) from None
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise JournalError(
                f"journal {self.journal} is in use by another capillary-async process "
                f"({holder}); wait for it to finish, or stop it, then run again"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the next process in (the lock file stays)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> JournalLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 256).decode("utf-8", "replace").strip()
    return excerpt(text, 120) if text else "a process that has not said who it is yet"


if sys.platform == "win32":  # pragma: no cover - the tests run on POSIX
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


# -- the journal ----------------------------------------------------------------------------------


class Journal:
    """One job's journal; every call runs in a worker thread, one at a time."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: str | Path, fingerprint: str) -> Journal:
        """Open or create; refuses anything that is not this job's journal, changing nothing."""
        journal_path = Path(path)
        return cls(
            journal_path, await anyio.to_thread.run_sync(_connect, journal_path, fingerprint)
        )

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(call, *args, limiter=self._limiter)

    async def close(self) -> None:
        await self._run(self._db.close)

    # -- writing -------------------------------------------------------------------------

    async def mark_in_flight(self, rows: Sequence[tuple[int, int, bool, Any, Any]]) -> None:
        """(index, line, idempotent, ref id, ref type) of rows about to be sent: committed first."""
        batch = [(i, line, int(idem), _refs(r, t)) for i, line, idem, r, t in rows]

        def write() -> None:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO items (idx, line, state, idempotent, refs) "
                    "VALUES (?, ?, 'in_flight', ?, ?) ON CONFLICT(idx) DO UPDATE SET "
                    "state = 'in_flight', idempotent = excluded.idempotent, "
                    "refs = COALESCE(excluded.refs, refs)",
                    batch,
                )

        await self._run(write)

    async def record(self, entries: Iterable[Entry]) -> None:
        """Outcomes; messages are bounded and made encodable, refs stored as JSON."""
        batch = [
            (
                e.index,
                e.line,
                e.state,
                _refs(e.ref_id, e.ref_type),
                _code(e.error_code),
                None if e.error_message is None else excerpt(e.error_message),
                None if e.request_id is None else excerpt(e.request_id, _REF_LIMIT),
                int(e.settled),
            )
            for e in entries
        ]
        if not batch:
            return

        def write() -> None:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO items (idx, line, state, refs, error_code, error_message, "
                    "request_id, settled) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(idx) DO UPDATE SET state = excluded.state, "
                    "refs = COALESCE(excluded.refs, refs), "
                    "error_code = excluded.error_code, error_message = excluded.error_message, "
                    "request_id = excluded.request_id, settled = excluded.settled",
                    batch,
                )

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
                    "SELECT idx, state, settled, idempotent FROM items WHERE idx > ? "
                    "ORDER BY idx LIMIT ?",
                    (after, batch),
                ).fetchall(),
                last,
            )
            if not rows:
                return
            for idx, state, settled, idempotent in rows:
                yield Journalled(
                    idx, state, None if settled is None else bool(settled), bool(idempotent)
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

        return await self._run(read)

    async def export_failures(self, write: Callable[[Iterator[Failure]], T]) -> T:
        """``write`` over every row that did not succeed, in the journal's thread, in order.

        Rows are read in batches as ``write`` consumes them, so a failures file
        of millions of rows costs flat memory and no loop turn per row.
        """
        return await self._run(lambda: write(self._failures()))

    def _failures(self, batch: int = 5000) -> Iterator[Failure]:
        last = -1
        while True:
            rows = self._db.execute(
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

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


# -- opening ----------------------------------------------------------------------------------


def _connect(path: Path, stamp: str) -> sqlite3.Connection:
    """The journal at ``path``, made or upgraded; ``JournalError`` for anything else there."""
    name = f"journal {path}"
    if path.is_dir():
        raise JournalError(f"{name} is a directory; give the path of a journal file")
    if path.exists():
        try:
            with path.open("rb") as stream:
                head = stream.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise JournalError(f"{name} cannot be read ({exc.strerror or 'error'})") from None
        if head and head != _SQLITE_MAGIC:
            raise JournalError(f"{name} is not a journal (not an SQLite database); left as it is")
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error:
        raise JournalError(
            f"{name} cannot be opened (does its directory exist, and may it be written?)"
        ) from None
    try:
        _adopt(db, name, stamp)
    except sqlite3.DatabaseError:
        db.close()
        raise JournalError(f"{name} is damaged or is not a journal; left as it is") from None
    except BaseException:
        db.close()
        raise
    return db


def _adopt(db: sqlite3.Connection, name: str, stamp: str) -> None:
    """Check what is in the database before changing anything, then make it this job's."""
    if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
        raise JournalError(f"{name} is damaged (SQLite's check failed); left as it is")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (stamp,))
        db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
    else:
        columns = (
            {row[1] for row in db.execute("PRAGMA table_info(items)")}
            if {"meta", "items"} <= tables
            else set()
        )
        found = (
            db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            if columns >= _V1_COLUMNS
            else None
        )
        if found is None:
            raise JournalError(
                f"{name} is an SQLite database but not a capillary-async journal; left as it is"
            )
        if found[0] != stamp:
            raise JournalMismatchError(
                f"{name} was made for another input file or target; "
                "use a new journal path (or the same file and target to resume)"
            )
        db.execute("PRAGMA journal_mode=WAL")
        for column in ("settled", "refs"):
            if column not in columns:  # a journal of format 1
                db.execute(f"ALTER TABLE items ADD COLUMN {column}")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (str(FORMAT),))
    db.execute("PRAGMA synchronous=NORMAL")


# -- values ---------------------------------------------------------------------------------------


def stored_ref(value: Any) -> Any:
    """A ref as kept: numbers and short text as they are; anything else as bounded text."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return excerpt(value, _REF_LIMIT)


def _refs(ref_id: Any, ref_type: Any) -> str | None:
    """Both refs as one JSON text: what a row held comes back exactly, whatever its type."""
    if ref_id is None and ref_type is None:
        return None
    return json.dumps([stored_ref(ref_id), stored_ref(ref_type)])


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
