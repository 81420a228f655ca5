"""Input that is not UTF-8: a stray byte spoils its own row, another encoding the whole file.

The first ``SCREENED`` characters of an input are read before its first row is
used: a UTF-16 or UTF-32 byte-order mark, NUL bytes, or bytes that are not
UTF-8 on two lines or more with no UTF-8 text at all (Windows-1252, Latin-1)
refuse the file before anything is sent.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence

from .._exceptions import InputError

__all__ = ["MAX_LINE", "SCREENED", "not_utf8", "screened"]

#: How much text (characters, whole lines) is screened for another encoding
#: before the first row is used; at most this and one line are held at once.
SCREENED = 1 << 20
#: The longest line read whole (characters).
MAX_LINE = 1 << 20


def not_utf8(text: str) -> str | None:
    """Why a decoded line is not UTF-8 text (its first stray byte), or None when it is."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        stray = ord(text[exc.start]) - 0xDC00
        return (
            f"not valid UTF-8 (byte 0x{stray:02x} at character {exc.start + 1}); save it as UTF-8"
        )
    return None


#: Bytes that are not UTF-8, as decoding with "surrogateescape" leaves them.
_STRAY = re.compile("[\udc80-\udcff]")
#: Characters past ASCII that did decode: text that is UTF-8 indeed.
_DECODED = re.compile("[^\x00-\x7f\udc80-\udcff]")
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_SAVE = 'save it as UTF-8 (Excel: "CSV UTF-8"). Nothing was sent'


def _as_bytes(text: str) -> bytes:
    """The bytes a decoded piece of text was read from (as far as they can be told)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate of a text stream: not from a file's bytes
        return b""


def _other_encoding(lines: Sequence[tuple[int, str | None]]) -> str | None:
    """Why the screened start of an input shows it is not UTF-8 at all, or None."""
    texts = [(number, text) for number, text in lines if text is not None]
    if not texts:
        return None
    number, first = texts[0]
    start = _as_bytes(first[:4])
    for mark, encoding in _BOMS:
        if number == 1 and start.startswith(mark):
            shown = " ".join(f"0x{byte:02x}" for byte in mark)
            return (
                f"line 1: the file starts with a {encoding} byte-order mark ({shown}): "
                f"it is {encoding} text, not UTF-8; {_SAVE}"
            )
    filled = next(((n, text) for n, text in texts if text.strip()), None)
    if filled is not None and "\x00" in filled[1]:
        return (
            f"line {filled[0]}: holds NUL bytes (0x00), as UTF-16 or UTF-32 text does: "
            f"the file is not UTF-8; {_SAVE}"
        )
    spoilt = [(n, stray) for n, text in texts if (stray := _STRAY.search(text))]
    if len(spoilt) < 2 or any(_DECODED.search(text) for _, text in texts):
        return None
    number, stray = spoilt[0]
    return (
        f"line {number}: not valid UTF-8 (byte 0x{ord(stray.group()) - 0xDC00:02x} at "
        f"character {stray.start() + 1}), and neither are {len(spoilt) - 1:,} more of the "
        f"first {len(texts):,} lines, while none is UTF-8 past ASCII: the file looks saved "
        "in another encoding (Windows-1252 or Latin-1, as Excel's plain CSV is); " + _SAVE
    )


def screened(lines: Iterator[tuple[int, str | None]]) -> Iterator[tuple[int, str | None]]:
    """``lines``, once their first ``SCREENED`` characters show UTF-8 (else ``InputError``)."""
    held: list[tuple[int, str | None]] = []
    size = 0
    for number, text in lines:
        held.append((number, text))
        size += MAX_LINE if text is None else len(text)
        if size >= SCREENED:
            break
    problem = _other_encoding(held)
    if problem is not None:
        raise InputError(problem)
    return itertools.chain(held, lines)
