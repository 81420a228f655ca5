"""One process per journal: an ``flock`` on the journal file itself, and a note of who holds it.

The lock is taken on the database file by its real path (a symlink or a hard
link to it is the same file); ``PATH.lock`` only names the holder, for the
message another process prints. It does not cover network file systems.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
from pathlib import Path

from .._exceptions import JournalError, excerpt

__all__ = ["JournalLock", "file_kind", "shown"]


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
