"""Input files, read lazily: JSONL (one wire object a line) and CSV (dotted wire names).

Each row carries its line number; a row that cannot be read (bad JSON, JSON
nested deeper than any wire object, bad CSV quoting, more cells than the
header, a byte that is not UTF-8) becomes a row with an ``error`` instead of
stopping the job. What makes the whole input unusable is an ``InputError``
before anything is sent: a CSV header naming unknown columns or missing
required ones (or separated by semicolons or tabs), no rows at all, and text
in another encoding than UTF-8.

Files are UTF-8, with or without the byte-order mark Excel writes. The first
MiB of an input (``SCREENED`` characters, whole lines) is read before its first
row is used, and the input is refused when it is plainly in another encoding:

- it starts with a UTF-16 or UTF-32 byte-order mark (Excel's "Unicode Text",
  PowerShell's ``>``), or its first line that is not blank holds a NUL byte
  (UTF-16 or UTF-32 without the mark);
- bytes that are not UTF-8 spoil two lines or more of it, and none of it is
  UTF-8 beyond ASCII: an 8-bit encoding, such as the Windows-1252 of Excel's
  plain "CSV", where every ``é`` is the single byte 0xE9.

A stray byte elsewhere (one line of that MiB, a line past it, a file that is
UTF-8 otherwise) spoils only its own row, which ends ``invalid``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from .._converters import wire_name
from .._exceptions import InputError, excerpt
from .._models import NOT_ON_WIRE, ExpiryUpdate, RedemptionUpdate
from .._wire import has_long_number
from ._encoding import MAX_LINE, not_utf8, screened

__all__ = ["Columns", "InputFile", "InputRow", "columns_of", "count_rows", "open_input"]

# The BOM Excel (and Notepad) put before UTF-8 text is dropped by "utf-8-sig";
# bytes that are not UTF-8 become lone surrogates and spoil only their own line.
_ENCODING = "utf-8-sig"
_ERRORS = "surrogateescape"
#: Deepest nesting a row may have. Wire objects nest two or three levels; a
#: deeper row is refused on its own line, before anything (the parser, the
#: models, the journal) could recurse through it and exhaust the stack.
MAX_DEPTH = 16


@attrs.frozen
class InputRow:
    """One input row: its position among the rows, its line, and its wire data or why not.

    A bulk job takes these as items: a row with an ``error`` ends ``invalid``
    with that reason, and every outcome and report row carries the ``line``.
    """

    index: int
    line: int
    data: Any = None
    error: str | None = None


@attrs.frozen
class Columns:
    """The dotted CSV columns a model takes: all it knows, those it needs, and open maps."""

    known: frozenset[str]
    required: tuple[str, ...]
    #: Prefixes (``customMeta.``) under which any key is a column.
    open: tuple[str, ...]

    def accepts(self, name: str) -> bool:
        """Whether ``name`` is a column: a known one, or a key under an open map."""
        return name in self.known or any(
            name.startswith(prefix) and len(name) > len(prefix) for prefix in self.open
        )

    def problems(self, header: Sequence[str]) -> list[str]:
        """What is wrong with a CSV header, one sentence a problem (none when it is usable)."""
        seen: set[str] = set()
        unknown: list[str] = []
        twice: list[str] = []
        for position, name in enumerate(header, start=1):
            if name in seen:
                twice.append(name)
            seen.add(name)
            if not name:
                unknown.append(f"(an empty name, column {position})")
            elif not self.accepts(name):
                unknown.append(name)
        missing = [name for name in self.required if name not in seen]
        found = []
        if unknown:
            found.append(f"unknown columns: {_names(unknown)}")
        if missing:
            found.append(f"missing required columns: {_names(missing)}")
        if twice:
            found.append(f"columns named twice: {_names(twice)}")
        return found

    def describe(self) -> str:
        """The columns, for a message that says what a header may hold."""
        optional = sorted(self.known - set(self.required))
        return f"required: {', '.join(self.required)}; optional: {', '.join(optional)}" + "".join(
            f", {prefix}<key>" for prefix in self.open
        )


def _names(names: Sequence[str]) -> str:
    return ", ".join(excerpt(name, 80) for name in names[:20]) + (
        f" and {len(names) - 20} more" if len(names) > 20 else ""
    )


def columns_of(kind: str) -> Columns:
    """The columns of an ``expiry`` or ``redemption`` CSV, from the request model itself."""
    model = ExpiryUpdate if kind == "expiry" else RedemptionUpdate
    known: set[str] = set()
    required: list[str] = []
    open_maps: list[str] = []

    def walk(cls: type[Any], prefix: str, needed: bool) -> None:
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            if field.metadata.get(NOT_ON_WIRE):
                continue
            name = prefix + wire_name(cls, field.name)
            value_type = _without_none(hints[field.name])
            field_needed = needed and field.default is attrs.NOTHING
            if attrs.has(value_type):
                walk(value_type, name + ".", field_needed)
            elif typing.get_origin(value_type) is dict:
                open_maps.append(name + ".")
            else:
                known.add(name)
                if field_needed:
                    required.append(name)

    walk(model, "", True)
    return Columns(frozenset(known), tuple(required), tuple(open_maps))


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def unflatten(record: dict[str, str]) -> dict[str, Any]:
    """Dotted CSV columns (``expiryDate.expiryType``) as nested wire fields; empty cells dropped."""
    result: dict[str, Any] = {}
    for column, value in record.items():
        if value is None or value == "":
            continue
        node = result
        *parents, leaf = column.split(".")
        for part in parents:
            existing = node.setdefault(part, {})
            if not isinstance(existing, dict):  # a data problem, reported per row
                raise ValueError(f"column {column!r} conflicts with column {part!r}")  # noqa: TRY004
            node = existing
        node[leaf] = value
    return result


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON data nests objects and arrays more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


_TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"


def _not_json(name: str) -> Any:
    """NaN and Infinity: Python's parser takes them, JSON (and Capillary) does not."""
    raise ValueError(f"{name} is not a JSON value")


def _parse(text: str) -> Any:
    """A row's JSON: orjson when it reads it exactly as ``json`` would, else ``json``.

    orjson reads integers past 64 bits as floats: a row with a run of 19 digits
    anywhere goes to ``json``, as does any row orjson refuses (NaN and Infinity
    among them), so that errors keep ``json``'s words.
    """
    if not has_long_number(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text, parse_constant=_not_json)


def _json_row(index: int, line: int, text: str) -> InputRow:
    problem = not_utf8(text)
    if problem is not None:
        return InputRow(index, line, error=f"line {line}: {problem}")
    try:
        data = _parse(text)
    except RecursionError:  # the C parser recurses once per level: "[" x 100,000
        return InputRow(index, line, error=f"line {line}: not valid JSON ({_TOO_DEEP})")
    except ValueError as exc:
        return InputRow(index, line, error=f"line {line}: not valid JSON ({exc})")
    if not isinstance(data, dict):
        kind = type(data).__name__
        return InputRow(index, line, error=f"line {line}: expected an object, got {kind}")
    if text.count("{") + text.count("[") > MAX_DEPTH and _deeper_than(data, MAX_DEPTH):
        return InputRow(index, line, error=f"line {line}: {_TOO_DEEP}")
    return InputRow(index, line, data)


#: The longest line read (characters): a real row is a few hundred; a whole JSON
#: array exported on one line must not be loaded into memory at once.

_ENDS = ("\n", "\r")
_TOO_LONG = f"longer than {MAX_LINE:,} characters (one object a line is expected)"


def _lines(stream: IO[str]) -> Iterator[tuple[int, str | None]]:
    """(number, text) of each line, ``None`` for one past ``MAX_LINE``: read in bounded steps."""
    number = 0
    while text := stream.readline(MAX_LINE + 1):
        number += 1
        if len(text) <= MAX_LINE or text.endswith(_ENDS):
            yield number, text
            continue
        while (rest := stream.readline(MAX_LINE)) and not rest.endswith(_ENDS):
            pass  # the rest of the long line, skipped piece by piece
        yield number, None


def _jsonl(lines: Iterator[tuple[int, str | None]]) -> Iterator[InputRow]:
    index = 0
    for line, text in lines:
        if text is None:
            yield InputRow(index, line, error=f"line {line}: {_TOO_LONG}")
            index += 1
        elif text.strip():
            yield _json_row(index, line, text)
            index += 1


def _cells(text: str) -> list[str]:
    return next(csv.reader([text], strict=True), [])


def _csv_header(lines: Iterator[tuple[int, str | None]], columns: Columns | None) -> list[str]:
    """The header, checked against the model's columns: a bad one stops the job unsent."""
    for line, raw in lines:
        if raw is None:
            raise InputError(f"line {line}: the CSV header is {_TOO_LONG}")
        text = raw.rstrip("\r\n")
        if not text.strip():
            continue
        problem = not_utf8(text)
        if problem is not None:
            raise InputError(f"line {line}: the CSV header is {problem}")
        try:
            header = [name.strip() for name in _cells(text)]
        except csv.Error as exc:
            raise InputError(f"line {line}: unreadable CSV header ({exc})") from None
        problems = columns.problems(header) if columns is not None else []
        separator = _other_separator(text, columns) if problems and columns is not None else None
        if separator is not None:
            raise InputError(
                f"the CSV header (line {line}) looks {separator}-separated "
                f"({excerpt(text, 80)}): save the file with commas between columns "
                '(Excel: "CSV UTF-8 (Comma delimited)"). Nothing was sent'
            )
        deep = [name for name in header if name.count(".") >= MAX_DEPTH]
        if deep:  # a row would nest as deep as its dotted names
            raise InputError(
                f"the CSV header (line {line}) has columns {_TOO_DEEP}: {_names(deep)}. "
                "Nothing was sent"
            )
        if columns is not None and problems:
            raise InputError(
                f"the CSV header (line {line}) has {'; '.join(problems)}. "
                f"Columns are {columns.describe()}. Nothing was sent"
            )
        return header
    raise InputError("no rows: the CSV file is empty; nothing was sent")


_SEPARATORS = ((";", "semicolon"), ("\t", "tab"))


def _other_separator(text: str, columns: Columns) -> str | None:
    """The separator a header that does not fit uses instead of commas, if it is plain.

    Excel's "CSV" has semicolons where the decimal mark is a comma, and its
    "Text (Tab delimited)" tabs: such a header, split at that separator, names
    two or more of the columns.
    """
    for separator, name in _SEPARATORS:
        if separator not in text:
            continue
        try:
            cells = next(csv.reader([text], delimiter=separator, strict=True), [])
        except csv.Error:
            continue
        if sum(columns.accepts(cell.strip()) for cell in cells) >= 2:
            return name
    return None


def _csv(lines: Iterator[tuple[int, str | None]], header: list[str]) -> Iterator[InputRow]:
    # One record a physical line: an unbalanced quote then spoils its own row
    # only, instead of swallowing the rows after it (multi-line cells are not
    # supported, which operations files do not use).
    index = 0
    for line, raw in lines:
        if raw is None:
            yield InputRow(index, line, error=f"line {line}: {_TOO_LONG}")
            index += 1
            continue
        text = raw.rstrip("\r\n")
        if text.strip():
            yield _csv_row(index, line, text, header)
            index += 1


def _csv_row(index: int, line: int, text: str, header: list[str]) -> InputRow:
    problem = not_utf8(text)
    if problem is not None:
        return InputRow(index, line, error=f"line {line}: {problem}")
    try:
        cells = _cells(text)
    except csv.Error as exc:
        return InputRow(index, line, error=f"line {line}: bad CSV ({exc})")
    if len(cells) > len(header):
        problem = f"{len(cells)} cells but the header has {len(header)} columns"
        return InputRow(index, line, error=f"line {line}: {problem}")
    record = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))
    try:
        return InputRow(index, line, unflatten(record))
    except ValueError as exc:
        return InputRow(index, line, error=f"line {line}: {exc}")


@contextlib.contextmanager
def open_input(path: str, columns: Columns | None) -> Iterator[Iterator[InputRow]]:
    """The rows of ``path`` (``.csv``, else JSON lines; ``-`` is JSONL on standard input).

    Raises ``InputError`` at once, before a row is used, for an input in
    another encoding than UTF-8 (see the module's docstring: its first
    ``SCREENED`` characters are read for that), a CSV header that does not fit
    ``columns`` and an input with no rows.
    """
    with _open_text(path) as stream:
        lines = screened(_lines(stream))
        if path != "-" and path.lower().endswith(".csv"):
            rows = _csv(lines, _csv_header(lines, columns))
        else:
            rows = _jsonl(lines)
        first = next(rows, None)
        if first is None:
            where = "standard input" if path == "-" else "the file"
            raise InputError(f"no rows: {where} holds no input rows; nothing was sent")
        yield itertools.chain([first], rows)


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[IO[str]]:
    if path == "-":
        binary = getattr(sys.stdin, "buffer", None)
        if binary is None:  # replaced by a text stream (tests, embedding): read it as it is
            yield sys.stdin
            return
        stream = io.TextIOWrapper(binary, encoding=_ENCODING, errors=_ERRORS)
        try:
            yield stream
        finally:
            stream.detach()  # standard input stays open for whoever owns it
        return
    newline = "" if path.lower().endswith(".csv") else None
    with Path(path).open(encoding=_ENCODING, errors=_ERRORS, newline=newline) as stream:
        yield stream


def count_rows(path: str) -> int | None:
    """A quick count of rows for the progress bar (None for standard input)."""
    if path == "-":
        return None
    lines = 0
    last = b"\n"
    with Path(path).open("rb") as stream:
        while block := stream.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1
    return max(0, lines - 1) if path.lower().endswith(".csv") else lines


class InputFile:
    """The rows of a JSONL or CSV file (``-``: JSON lines on standard input), read lazily.

    Iterate it, or hand it to a bulk call as its items: each row is an
    ``InputRow``, so outcomes and reports name the file's line, and a journal
    ties itself to the file's bytes. ``kind`` (``"expiry"`` or
    ``"redemption"``) says which columns a CSV header may name.

    ``shard=(k, n)`` keeps every n-th row starting at row k (1-based), so that
    n machines split one file, each with its own journal; their reports add
    up to the whole file. A journal is tied to its shard as well as the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str = "expiry",
        shard: tuple[int, int] | None = None,
    ) -> None:
        if kind not in ("expiry", "redemption"):
            raise ValueError("kind: must be 'expiry' or 'redemption'")
        if shard is not None:
            k, n = shard
            if isinstance(k, bool) or isinstance(n, bool) or not 1 <= k <= n:
                raise ValueError("shard: must be (k, n) with 1 <= k <= n")
        self.path = os.fspath(path)
        self.kind = kind
        self.shard = shard

    def __repr__(self) -> str:
        shard = f" shard={self.shard[0]}/{self.shard[1]}" if self.shard else ""
        return f"<InputFile {excerpt(self.path, 200)} kind={self.kind}{shard}>"

    def __iter__(self) -> Iterator[InputRow]:
        with open_input(self.path, columns_of(self.kind)) as rows:
            if self.shard is None:
                yield from rows
                return
            k, n = self.shard
            yield from (row for row in rows if row.index % n == k - 1)

    def check(self) -> None:
        """``InputError`` if the file cannot be used; only about its first MiB is read.

        The same checks run when iteration starts: the first MiB is screened for
        another encoding than UTF-8 (a UTF-16 or UTF-32 byte-order mark, NUL
        bytes in the first line, or bytes that are not UTF-8 on two lines or
        more with no UTF-8 past ASCII: see the module's docstring), then a CSV
        header is checked against the columns of ``kind`` (and refused with a
        hint when it is separated by semicolons or tabs), and the first row
        must exist.
        """
        with open_input(self.path, columns_of(self.kind)):
            pass

    def sha256(self) -> str:
        """The SHA-256 of the file's bytes (hex): what names this input across machines.

        Read in blocks (flat memory); standard input has none (``InputError``).
        """
        if self.path == "-":
            raise InputError("standard input has no digest: it can be read once only")
        digest = hashlib.sha256()
        with Path(self.path).open("rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def count(self) -> int | None:
        """How many rows (of this shard), counted quickly (None for standard input)."""
        total = count_rows(self.path)
        if total is None or self.shard is None:
            return total
        k, n = self.shard
        return total // n + (1 if total % n >= k else 0)
