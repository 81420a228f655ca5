"""Input files, read lazily: JSONL (one wire object a line) and CSV (dotted wire names).

Each row carries its line number; a row that cannot be read (bad JSON, bad
CSV quoting, more cells than the header) becomes a row with an ``error``
instead of stopping the job.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import attrs

__all__ = ["Row", "count_rows", "open_rows", "unflatten"]


@attrs.frozen
class Row:
    """One input row: its position among the rows, its line, and its data or why not."""

    index: int
    line: int
    data: Any = None
    error: str | None = None


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


def _jsonl(stream: IO[str]) -> Iterator[Row]:
    index = 0
    for line_number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            yield Row(index, line_number, error=f"line {line_number}: not valid JSON ({exc})")
        else:
            if isinstance(data, dict):
                yield Row(index, line_number, data)
            else:
                kind = type(data).__name__
                yield Row(
                    index, line_number, error=f"line {line_number}: expected an object, got {kind}"
                )
        index += 1


def _cells(text: str) -> list[str]:
    return next(csv.reader([text], strict=True), [])


def _csv(stream: IO[str]) -> Iterator[Row]:
    # One record a physical line: an unbalanced quote then spoils its own row
    # only, instead of swallowing the rows after it (multi-line cells are not
    # supported, which operations files do not use).
    index = 0
    header: list[str] | None = None
    for line, raw in enumerate(stream, start=1):
        text = raw.rstrip("\r\n")
        if header is None:
            try:
                header = [name.strip() for name in _cells(text)]
            except csv.Error as exc:
                yield Row(0, line, error=f"line {line}: unreadable CSV header ({exc})")
                return
            continue
        if not text.strip():
            continue
        try:
            cells = _cells(text)
        except csv.Error as exc:
            yield Row(index, line, error=f"line {line}: bad CSV ({exc})")
        else:
            if len(cells) > len(header):
                problem = f"{len(cells)} cells but the header has {len(header)} columns"
                yield Row(index, line, error=f"line {line}: {problem}")
            else:
                record = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))
                try:
                    yield Row(index, line, unflatten(record))
                except ValueError as exc:
                    yield Row(index, line, error=f"line {line}: {exc}")
        index += 1


def open_rows(path: str) -> Iterator[Row]:
    """Rows of ``path`` (``.csv``, else JSON lines), or of standard input for ``-``."""
    if path == "-":
        yield from _jsonl(sys.stdin)
        return
    reader = _csv if path.lower().endswith(".csv") else _jsonl
    with Path(path).open(encoding="utf-8", newline="" if reader is _csv else None) as stream:
        yield from reader(stream)


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
