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
import os
import socket
import sqlite3
import stat
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
    "JournalIOError",
    "JournalLock",
    "JournalMismatchError",
    "Journalled",
    "Resume",
    "file_kind",
    "fingerprint",
    "resume",
    "shown",
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


class JournalIOError(JournalError):
    """The journal could not be written (a full disk, an I/O error) or read during a run."""


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


#: Opening never waits (a FIFO put where a file was expected) and never follows a link.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def shown(path: object) -> str:
    """A path as printed: any control character in it neutralised."""
    return excerpt(path, 4000)


class JournalLock:
    """The kernel's lock (``flock``) on the journal file itself, held for a whole run.

    The database file is opened by its real path and locked, so every name it
    goes by (a symlink, a hard link, another path to its directory) meets the
    same lock, and no file next to it can be deleted to get around it. SQLite's
    own locks are POSIX ``fcntl`` locks, which on Linux do not interact with
    ``flock``. The lock goes with the process however it ends. A sidecar
    ``<journal>.lock`` only says who holds it, for the message a second process
    prints; the holder removes it when it lets go.
    """

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        #: The file itself: what the lock covers and what SQLite must open.
        self.path = Path(os.path.realpath(journal))
        self.holder_path = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None
        self._created = False
        #: Set once SQLite has opened it: from then on the file is never removed here.
        self.opened = False

    @property
    def name(self) -> str:
        """The journal as the messages name it: as given, and the file it is if that differs."""
        given = f"journal {shown(self.journal)}"
        if os.path.abspath(self.journal) != str(self.path):
            given += f" (the file {shown(self.path)})"
        return given

    def acquire(self) -> None:
        """Take the lock, or raise ``JournalError`` naming the journal and its holder at once."""
        for _ in range(5):
            fd = self._open()
            try:
                locked = _try_lock(fd)
            except OSError as exc:  # a file system without locks, say
                os.close(fd)
                raise JournalError(f"{self.name} cannot be locked ({_os_reason(exc)})") from None
            # Replaced or removed between the open and the lock (its holder removed
            # an empty file it had made): then lock what the path names now.
            if locked and _same_file(self.path, fd):
                break
            holder = None if locked else _read_holder(self.holder_path) or _lock_holder(fd)
            os.close(fd)
            if not locked:
                raise JournalError(
                    f"{self.name} is in use by another capillary-async process "
                    f"({holder or 'a process that has not said who it is'}); wait for it "
                    "to finish, or stop it, then run again"
                )
        else:
            raise JournalError(f"{self.name} keeps being replaced; nothing was sent")
        self._fd = fd
        self._write_holder()

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is the file this lock holds (SQLite opened what was locked)."""
        return self._fd is not None and _same_file(path, self._fd)

    def _open(self) -> int:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise JournalError(f"{self.name} cannot be used ({_os_reason(exc)})") from None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise JournalError(_not_regular(self.name, info.st_mode))
        # Never blocks (a FIFO put there meanwhile), never follows a link put there.
        flags = os.O_RDWR | _NONBLOCK | _NOFOLLOW | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            self._created = True
        except FileExistsError:
            try:
                fd = os.open(self.path, flags)
            except OSError as exc:
                raise JournalError(f"{self.name} cannot be opened ({_os_reason(exc)})") from None
        except OSError as exc:
            raise JournalError(
                f"{self.name} cannot be created ({_os_reason(exc)}); does its directory exist, "
                "and may it be written?"
            ) from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise JournalError(_not_regular(self.name, mode))
        return fd

    def _write_holder(self) -> None:
        # Best effort: the lock is the journal's; this only names its holder.
        flags = os.O_WRONLY | os.O_CREAT | _NONBLOCK | _NOFOLLOW
        try:
            fd = os.open(self.holder_path, flags, 0o644)
        except OSError:
            return
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    def release(self) -> None:
        """Let the next process in; an empty file this run made and never used is removed."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:  # while the lock is held, so nobody else is using either file
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(self.holder_path).st_mode):
                    os.unlink(self.holder_path)
            with contextlib.suppress(OSError):
                # Never once SQLite had it: in WAL mode its data may all be in -wal.
                unused = self._created and not self.opened and os.fstat(fd).st_size == 0
                if unused and _same_file(self.path, fd):
                    os.unlink(self.path)
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> JournalLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(path: Path, fd: int) -> bool:
    try:
        here, there = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _not_regular(name: str, mode: int) -> str:
    return (
        f"{name} is {file_kind(mode)}, not a regular file; give the path of a journal file "
        "(it is made if it does not exist)"
    )


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _os_reason(exc: OSError) -> str:
    return exc.strerror or "error"


def _read_holder(path: Path) -> str | None:
    """What the holder wrote in the sidecar, if it is there."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, 256).decode("utf-8", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return excerpt(text, 120) if text else None


def _lock_holder(fd: int) -> str | None:
    """Who holds the ``flock`` on ``fd``'s file, from Linux's ``/proc/locks``.

    For a journal reached by a hard link, or whose sidecar was deleted.
    """
    try:
        info = os.fstat(fd)
        wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (waiters have "->")
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted:
                    return f"pid {excerpt(fields[4], 20)} on this machine"
    except (OSError, ValueError, AttributeError):  # not Linux
        pass
    return None


if sys.platform == "win32":  # pragma: no cover - the tests run on POSIX
    import msvcrt

    #: Windows locks are mandatory: lock a byte far past anything SQLite reads.
    _LOCK_OFFSET = 1 << 40

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
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

    @classmethod
    async def open(cls, path: str | Path, fingerprint: str, *, name: str | None = None) -> Journal:
        """Open or create; refuses anything that is not this job's journal, changing nothing."""
        journal_path = Path(path)
        name = name or f"journal {shown(journal_path)}"
        connection = await anyio.to_thread.run_sync(_connect, journal_path, fingerprint, name)
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
                doing="read",
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

        return await self._run(read, doing="read")

    async def export_failures(self, write: Callable[[Iterator[Failure]], T]) -> T:
        """``write`` over every row that did not succeed, in the journal's thread, in order.

        Rows are read in batches as ``write`` consumes them, so a failures file
        of millions of rows costs flat memory and no loop turn per row. An
        ``OSError`` of ``write`` (its file) comes through as it is.
        """
        return await self._run(lambda: write(self._failures()), doing="read")

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


#: SQLite's primary result codes, in words (Python 3.11+ names them on the exception).
_SQLITE_REASONS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "a disk input/output error",
    "SQLITE_READONLY": "it is read-only",
    "SQLITE_CANTOPEN": "a file could not be opened",
    "SQLITE_PERM": "permission denied",
    "SQLITE_BUSY": "another program is using it",
    "SQLITE_LOCKED": "another program is using it",
    "SQLITE_CORRUPT": "it is damaged",
    "SQLITE_NOTADB": "it is not an SQLite database",
    "SQLITE_NOMEM": "out of memory",
}
#: The same from SQLite's fixed English texts, for Python 3.10.
_SQLITE_TEXTS = (
    ("disk is full", "SQLITE_FULL"),
    ("disk i/o", "SQLITE_IOERR"),
    ("readonly", "SQLITE_READONLY"),
    ("unable to open", "SQLITE_CANTOPEN"),
    ("locked", "SQLITE_BUSY"),
    ("malformed", "SQLITE_CORRUPT"),
    ("not a database", "SQLITE_NOTADB"),
)


def sqlite_code(exc: sqlite3.Error) -> str | None:
    """The primary SQLite result code of an error (``SQLITE_FULL``), when known."""
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str):
        for code in _SQLITE_REASONS:
            if name == code or name.startswith(code + "_"):
                return code
    text = str(exc).lower()
    return next((code for fragment, code in _SQLITE_TEXTS if fragment in text), None)


def sqlite_reason(exc: sqlite3.Error) -> str:
    """Why SQLite failed, in our words (never its exception's repr)."""
    code = sqlite_code(exc)
    return _SQLITE_REASONS[code] if code else "an SQLite error"


# -- opening ----------------------------------------------------------------------------------


#: Failures to open that say nothing about what the file holds.
_ENVIRONMENT_CODES = frozenset(
    {"SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"}
    | {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_NOMEM"}
)


def _connect(path: Path, stamp: str, name: str) -> sqlite3.Connection:
    """The journal at ``path``, made or upgraded; ``JournalError`` for anything else there."""
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
    except sqlite3.DatabaseError as exc:
        db.close()
        if sqlite_code(exc) in _ENVIRONMENT_CODES:
            raise JournalError(
                f"{name} cannot be used ({sqlite_reason(exc)}); nothing was sent"
            ) from None
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
                f"{name} was made for another input file or target (the file's bytes, the "
                "job kind and the target must all match to resume). Do not start a new "
                "journal for an edited copy of the same rows: every row would be sent again, "
                "and FIXED_DAYS / FIXED_MONTHS rows already applied would be extended twice. "
                "To resume, restore the original file; to send corrected rows, put only those "
                "rows in a new file, with a new journal"
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
