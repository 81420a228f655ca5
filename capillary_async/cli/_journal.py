"""The job journal: SQLite (WAL), written off the event loop, one row per input row.

A row is absent while pending, ``in_flight`` from just before its chunk is
sent, and final (``succeeded``, ``failed``, ``invalid``, ``unknown``,
``not_attempted``) once its chunk completes. A rerun skips final rows, resends
rows left in flight only when that is safe, and sends the rest. The journal is
tied to its input file and target by a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

__all__ = ["FINAL", "Journal", "JournalMismatchError", "fingerprint"]

T = TypeVar("T")
FINAL = frozenset({"succeeded", "failed", "invalid", "unknown", "not_attempted"})
# A row left not_attempted by an interrupted or stopped run is sent again on resume.
RESUMABLE = frozenset({"not_attempted"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    line INTEGER NOT NULL,
    state TEXT NOT NULL,
    idempotent INTEGER,
    ref_id TEXT,
    ref_type TEXT,
    error_code INTEGER,
    error_message TEXT,
    request_id TEXT
);
"""


class JournalMismatchError(Exception):
    """The journal belongs to another input file or target."""


def fingerprint(kind: str, path: str, target: str) -> str:
    """What a journal is tied to: the job kind, the input's bytes and the target URL."""
    digest = hashlib.sha256()
    digest.update(f"{kind}\0{target}\0".encode())
    with Path(path).open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Journal:
    """One job's journal; every call runs in a worker thread, one at a time."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: str | Path, fingerprint: str) -> Journal:
        """Open or create; refuses a journal made for another input or target."""
        journal_path = Path(path)

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(journal_path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
            elif row[0] != fingerprint:
                db.close()
                raise JournalMismatchError(
                    f"journal {journal_path} was made for another input file or target; "
                    "use a new journal path (or the same file and target to resume)"
                )
            return db

        return cls(journal_path, await anyio.to_thread.run_sync(connect))

    async def _run(self, call: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(call, *args, limiter=self._limiter)

    async def close(self) -> None:
        await self._run(self._db.close)

    # -- writing -------------------------------------------------------------------------

    async def mark_in_flight(self, rows: Sequence[tuple[int, int, bool, Any, Any]]) -> None:
        """(index, line, idempotent, ref id, ref type) of rows about to be sent: committed first."""

        def write() -> None:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO items (idx, line, state, idempotent, ref_id, ref_type) "
                    "VALUES (?, ?, 'in_flight', ?, ?, ?) ON CONFLICT(idx) DO UPDATE SET "
                    "state = 'in_flight', idempotent = excluded.idempotent",
                    [(i, line, int(idem), _text(r), _text(t)) for i, line, idem, r, t in rows],
                )

        await self._run(write)

    async def record(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Final outcomes: (index, line, state, ref id, ref type, code, message, request id)."""
        batch = [
            (i, line, state, _text(r), _text(t), code, message, request_id)
            for i, line, state, r, t, code, message, request_id in rows
        ]
        if not batch:
            return

        def write() -> None:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO items (idx, line, state, ref_id, ref_type, error_code, "
                    "error_message, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(idx) DO UPDATE SET state = excluded.state, "
                    "ref_id = COALESCE(excluded.ref_id, ref_id), "
                    "ref_type = COALESCE(excluded.ref_type, ref_type), "
                    "error_code = excluded.error_code, error_message = excluded.error_message, "
                    "request_id = excluded.request_id",
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

    async def states(self, batch: int = 5000) -> AsyncIterator[tuple[int, str, bool]]:
        """(index, state, idempotent) of every journalled row, in index order, in batches."""
        last = -1
        while True:
            rows = await self._run(
                lambda after: self._db.execute(
                    "SELECT idx, state, idempotent FROM items WHERE idx > ? ORDER BY idx LIMIT ?",
                    (after, batch),
                ).fetchall(),
                last,
            )
            if not rows:
                return
            for idx, state, idempotent in rows:
                yield idx, state, bool(idempotent)
            last = rows[-1][0]

    async def summary(self) -> dict[str, Any]:
        """Counts by final state, failures by code and the accumulated counters."""

        def read() -> dict[str, Any]:
            counts = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state"))
            codes = self._db.execute(
                "SELECT COALESCE(CAST(error_code AS TEXT), state), COUNT(*) FROM items "
                "WHERE state NOT IN ('succeeded', 'not_attempted', 'in_flight') GROUP BY 1"
            ).fetchall()
            meta = dict(self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'count:%'"))
            return {
                "states": counts,
                "failures_by_code": dict(codes),
                "counters": {k.split(":", 1)[1]: int(v) for k, v in meta.items()},
            }

        result: dict[str, Any] = await self._run(read)
        return result

    async def failures(self, batch: int = 5000) -> AsyncIterator[tuple[Any, ...]]:
        """(line, ref id, ref type, state, code, message) of every row that did not succeed."""
        last = -1
        while True:
            rows = await self._run(
                lambda after: self._db.execute(
                    "SELECT idx, line, ref_id, ref_type, state, error_code, error_message "
                    "FROM items WHERE idx > ? AND state != 'succeeded' ORDER BY idx LIMIT ?",
                    (after, batch),
                ).fetchall(),
                last,
            )
            if not rows:
                return
            for row in rows:
                yield row[1:]
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


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "value"):
        value = value.value
    return value if isinstance(value, str) else json.dumps(value)
