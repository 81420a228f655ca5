"""The journal's file: made, checked and upgraded before anything is written to it.

Anything that is not this job's journal (another program's database, a damaged
file, a journal of another input, target or shard) is refused and left as it is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .._exceptions import JournalError, JournalMismatchError, excerpt
from ._sqlite import sqlite_code, sqlite_reason

__all__ = ["FORMAT", "connect"]

#: 2 added ``settled`` and ``refs``, 3 ``digest``; an older journal is upgraded in place.
FORMAT = 3
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
    refs TEXT,              -- JSON [ref id, ref type]
    digest TEXT             -- an input that is not a file: its item's wire form, hashed
);
"""
#: Failures to open that say nothing about what the file holds.
_ENVIRONMENT_CODES = frozenset(
    {"SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"}
    | {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_NOMEM"}
)


def connect(
    path: Path, stamp: str, name: str, read_only: bool = False, about: dict[str, str] | None = None
) -> sqlite3.Connection:
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
        if read_only:
            # Locked, so nobody writes it: read as immutable (no -wal / -shm made),
            # unless a crashed run left committed rows in its -wal, which must be read.
            wal = path.with_name(path.name + "-wal")
            pending_wal = wal.exists() and wal.stat().st_size > 0
            uri = path.resolve().as_uri() + ("?mode=ro" if pending_wal else "?immutable=1")
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        else:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error:
        raise JournalError(
            f"{name} cannot be opened (does its directory exist, and may it be written?)"
        ) from None
    try:
        _adopt(db, name, stamp, read_only, about or {})
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


def _other_shard(db: sqlite3.Connection, name: str, about: dict[str, str]) -> None:
    """A journal of this very file made for another shard is refused naming both shards."""
    if "input" not in about or "shard" not in about:
        return
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('input', 'shard')"))
    if meta.get("input") != about["input"] or meta.get("shard", about["shard"]) == about["shard"]:
        return

    def named(shard: str) -> str:
        return "the whole file" if shard == "all" else f"shard {excerpt(shard, 20)}"

    raise JournalMismatchError(
        f"{name} was made for {named(meta['shard'])} of this input file, and this run is "
        f"{named(about['shard'])}: each shard keeps a journal of its own. Resume that run "
        "with its own shard, or give this one a new journal"
    )


def _adopt(
    db: sqlite3.Connection,
    name: str,
    stamp: str,
    read_only: bool = False,
    about: dict[str, str] | None = None,
) -> None:
    """Check what is in the database before changing anything, then make it this job's."""
    if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
        raise JournalError(f"{name} is damaged (SQLite's check failed); left as it is")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (stamp,))
        db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
        db.executemany("INSERT INTO meta VALUES (?, ?)", sorted((about or {}).items()))
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
            _other_shard(db, name, about or {})
            raise JournalMismatchError(
                f"{name} was made for another input file or target (the file's bytes, the "
                "job kind and the target must all match to resume). Do not start a new "
                "journal for an edited copy of the same rows: every row would be sent again, "
                "and FIXED_DAYS / FIXED_MONTHS rows already applied would be extended twice. "
                "To resume, restore the original file; to send corrected rows, put only those "
                "rows in a new file, with a new journal"
            )
        if read_only:
            if not {"settled", "refs"} <= columns:
                raise JournalError(
                    f"{name} was made by an earlier version; a dry run does not upgrade it "
                    "(run once without a dry run, or use a copy)"
                )
            return
        db.execute("PRAGMA journal_mode=WAL")
        for column in ("settled", "refs", "digest"):
            if column not in columns:  # a journal of an earlier format
                db.execute(f"ALTER TABLE items ADD COLUMN {column}")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (str(FORMAT),))
    db.execute("PRAGMA synchronous=NORMAL")
