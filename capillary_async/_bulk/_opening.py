"""A journal opened under its lock: what a resumable job reads and writes."""

from __future__ import annotations

from pathlib import Path

from .._exceptions import JournalError
from ._journal import Journal
from ._lock import JournalLock

__all__ = ["open_locked"]


async def open_locked(
    lock: JournalLock, path: Path, stamp: str, *, dry_run: bool, about: dict[str, str]
) -> Journal | None:
    """The locked journal, opened; None for a dry run before any journal exists."""
    if dry_run and _no_journal_yet(lock.path):
        return None  # the lock may have made an empty file: it removes it on release
    journal = await Journal.open(lock.path, stamp, name=lock.name, read_only=dry_run, about=about)
    lock.opened = True  # SQLite has it now: the lock never removes it
    if not lock.holds(path):
        await journal.close()
        raise JournalError(f"{lock.name} was replaced while it was opened; nothing was sent")
    return journal


def _no_journal_yet(path: Path) -> bool:
    """Nothing to read: no file, or an empty one (the lock's own) with no WAL beside it."""
    try:
        if path.stat().st_size > 0:
            return False
    except FileNotFoundError:
        return True
    except OSError:
        return False  # let opening it say what is wrong
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False
