"""Paths checked before anything is sent: the input, the outputs and the journal.

Everything here can be found wrong by looking (never by opening a pipe that
would block), and is a ``UsageError`` raised before the first request.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING

import attrs

from .. import excerpt
from ._env import UsageError

if TYPE_CHECKING:
    from ._run import ApplyOptions

__all__ = ["Output", "Outputs", "check_input", "check_journal_path", "check_outputs", "shown"]


def shown(text: object) -> str:
    """Text safe to print whatever it holds (control characters, undecodable bytes)."""
    return excerpt(text, 4000)


@attrs.define
class Output:
    """Where ``--report`` or ``--failures`` goes, checked before anything is sent.

    A regular file (or one to be made) is written by its path at the end. A pipe
    or a device (``>(gzip > f.gz)``, ``/dev/stdout``, ``/dev/null``) is opened
    at once without blocking, and held open until written: a named pipe that
    nothing reads is refused rather than waited on, and a reader that is there
    does not get an end of file before the output.
    """

    option: str
    path: str
    fd: int | None = None

    def open(self, newline: str | None) -> IO[str]:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            return os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        return Path(self.path).open("w", encoding="utf-8", newline=newline)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


@attrs.define
class Outputs:
    report: Output | None = None
    failures: Output | None = None

    def close(self) -> None:
        for output in (self.report, self.failures):
            if output is not None:
                output.close()


#: Files SQLite and the lock keep next to a journal: an output written there ruins it.
_COMPANIONS = (
    ("-wal", "the journal's write-ahead log"),
    ("-shm", "the journal's shared-memory index"),
    ("-journal", "the journal's rollback journal"),
    (".lock", "the journal's lock file"),
)


def _protected(options: ApplyOptions) -> list[tuple[str, str]]:
    """Files an output must not be: the input, the journal and the files beside it."""
    files = [] if options.input == "-" else [("INPUT", options.input)]
    if options.journal:
        files.append(("--journal", options.journal))
        for base in dict.fromkeys([options.journal, os.path.realpath(options.journal)]):
            files += [(label, base + suffix) for suffix, label in _COMPANIONS]
    return files


def _same_file(path: str, other: str) -> bool:
    """The same file by any name: one real path, or one inode (a hard link)."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(path, other)
    except (OSError, ValueError):  # one of them does not exist (yet)
        return False


def check_outputs(options: ApplyOptions) -> Outputs:
    """Find an unusable --report / --failures before anything is sent, by opening it."""
    outputs = Outputs()
    protected = _protected(options)
    try:
        for option, path in (("--report", options.report), ("--failures", options.failures)):
            if path:
                setattr(outputs, option[2:], _check_output(option, path, protected))
                protected.append((option, path))
    except BaseException:
        outputs.close()
        raise
    return outputs


def _check_output(option: str, path: str, protected: list[tuple[str, str]]) -> Output:
    for label, other in protected:
        if _same_file(path, other):
            raise UsageError(
                f"{option} {shown(path)} is the same file as {label}; "
                "give another path (nothing was sent)"
            )
    return _probe(option, path)


def _standard_streams() -> list[os.stat_result]:
    found = []
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            found.append(os.fstat(fd))
    return found


def _probe(option: str, path: str) -> Output:
    shown_path = shown(path)
    info = _existing(option, path, "written")
    if info is not None and stat.S_ISREG(info.st_mode):
        for stream in _standard_streams():
            if (stream.st_dev, stream.st_ino) == (info.st_dev, info.st_ino):
                # Opened again and truncated, it would be overwritten by the summary.
                raise UsageError(
                    f"{option} {shown_path} is the file standard output or standard error "
                    "goes to; give another path (nothing was sent)"
                )
    if info is None or stat.S_ISREG(info.st_mode):
        existed = info is not None
        try:
            with Path(path).open("a", encoding="utf-8"):  # creates nothing it does not keep
                pass
        except OSError as exc:
            raise UsageError(
                f"{option} {shown_path} cannot be written ({exc.strerror or 'error'}); "
                "nothing was sent"
            ) from None
        if not existed:
            Path(path).unlink(missing_ok=True)
        return Output(option, path)
    if stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode):
        return Output(option, path, _open_stream(option, path))
    raise UsageError(
        f"{option} {shown_path} is {file_kind(info.st_mode)}; give a file path, a pipe "
        "or a device (nothing was sent)"
    )


def _open_stream(option: str, path: str) -> int:
    """A pipe or device opened for writing now, without waiting for a reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a named pipe with no reader
            raise UsageError(
                f"{option} {shown(path)} is a named pipe that nothing is reading; start "
                "its reader first, or give a file path (nothing was sent)"
            ) from None
        raise UsageError(
            f"{option} {shown(path)} cannot be written ({exc.strerror or 'error'}); "
            "nothing was sent"
        ) from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):  # replaced since it was looked at
        os.close(fd)
        raise UsageError(f"{option} {shown(path)} changed while it was checked; run again")
    os.set_blocking(fd, True)  # the output itself may wait for a slow reader
    return fd


def check_input(path: str) -> None:
    if path == "-":
        return
    try:
        info = os.stat(path)
    except OSError:
        raise UsageError(f"INPUT: no such file: {shown(path)}") from None
    if not stat.S_ISREG(info.st_mode):
        # It is read more than once (counted, fingerprinted, sent): a pipe cannot be.
        raise UsageError(
            f"INPUT {shown(path)} is {file_kind(info.st_mode)}, not a regular file; "
            "give a file, or - to read JSONL from standard input"
        )


def _existing(option: str, path: str, verb: str) -> os.stat_result | None:
    """What is at ``path`` (None: nothing yet), found without opening it (never blocks).

    A directory, or a path that cannot even be looked at, is a usage error.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(
            f"{option} {shown(path)} cannot be {verb} ({exc.strerror or 'error'}); nothing was sent"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{option} {shown(path)} is a directory; give a file path")
    return info


def check_journal_path(options: ApplyOptions) -> None:
    """A journal is a regular file, or none yet; checked without opening it (never blocks)."""
    path = options.journal
    if not path:
        return
    info = _existing("--journal", path, "used")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UsageError(
            f"--journal {shown(path)} is {file_kind(info.st_mode)}, not a regular file; "
            "give the path of a journal file (it is made if it does not exist)"
        )
    if options.input != "-" and _same_file(path, options.input):
        raise UsageError(f"--journal {shown(path)} is the same file as INPUT; give another path")


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
