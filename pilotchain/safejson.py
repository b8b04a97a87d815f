"""JSON from outside, parsed with every number and every nesting bounded.

``json.loads`` alone is not safe on input nobody vouches for: an integer of thousands of
digits raises a plain ValueError from inside it (past a caller's ``JSONDecodeError``), NaN and
Infinity are taken although they are not JSON, and py_ecc (under eth-account) raises the
interpreter's recursion limit to 100,000 when imported, so a document of 100,000 nested
arrays overflows the C stack and kills the process instead of raising. Every door that parses
JSON (the ingest's HTTP and MQTT readings, the bridge's stream entries) goes through
:func:`load_bounded` with bounds of its own and gets :class:`UnsafeJson`, a sentence, for
anything else.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from pilotchain.errors import PilotChainError

_MARKS = re.compile(rb'[\[\]{}"\\]')


class UnsafeJson(PilotChainError):
    """The text is not JSON within the door's bounds; the message says what is wrong."""


@dataclass(frozen=True)
class JsonBounds:
    """What a door accepts, and the end of each sentence that explains a refusal."""

    max_digits: int  # of an integer; a fraction may be written with twice as many characters
    max_depth: int
    max_marks: int  # brackets, quotes and backslashes the nesting check walks
    digits_reason: str  # "no field of a reading takes more than 20 (...)"
    fraction_reason: str
    constant_reason: str
    depth_reason: str
    marks_reason: str
    reader: str  # who reads it, for the last resort: "the ingest"


def load_bounded(text: str | bytes, bounds: JsonBounds, what: str) -> object:
    """Parse ``text`` (``what`` names it in sentences: "The reading") within ``bounds``."""
    data = text.encode("utf-8", errors="surrogateescape") if isinstance(text, str) else text
    problem = _nesting_problem(data, bounds)
    if problem is not None:
        raise UnsafeJson(f"{what} {problem}")

    def bounded_int(number: str) -> int:
        digits = len(number.lstrip("-"))
        if digits > bounds.max_digits:
            raise UnsafeJson(f"A number has {digits} digits; {bounds.digits_reason}")
        return int(number)

    def bounded_float(number: str) -> float:
        if len(number) > 2 * bounds.max_digits:
            raise UnsafeJson(f"A number is written with {len(number)} characters; "
                             f"{bounds.fraction_reason}")
        value = float(number)
        if not math.isfinite(value):  # 1e999 is short, and infinite
            shown = number if len(number) <= 24 else f"{number[:24]}..."
            raise UnsafeJson(f"The number {shown} is too large; {bounds.constant_reason}")
        return value

    def no_constant(name: str) -> float:
        raise UnsafeJson(f"{name} is not a JSON number; {bounds.constant_reason}")

    try:
        return json.loads(text, parse_int=bounded_int, parse_float=bounded_float,
                          parse_constant=no_constant)
    except json.JSONDecodeError as error:
        raise UnsafeJson(f"{what} is not JSON: {error.msg} at character {error.pos}.") from None
    except UnicodeDecodeError:
        raise UnsafeJson(f"{what} is not UTF-8 text; send JSON.") from None
    except RecursionError:
        raise UnsafeJson(f"{what} nests arrays or objects too deeply to be JSON "
                         f"{bounds.reader} reads.") from None


def _nesting_problem(data: bytes, bounds: JsonBounds) -> str | None:
    """Why ``data`` nests too deeply for json.loads to be safe, None if it does not: the depth
    counted first, outside strings, walking only the marks that matter."""
    marks = sum(map(data.count, (b"[", b"]", b"{", b"}", b'"', b"\\")))
    if marks > bounds.max_marks:
        return (f"holds {marks} brackets, quotes and backslashes, more than "
                f"{bounds.max_marks}; {bounds.marks_reason}")
    depth, in_string, escaped = 0, False, -1
    for match in _MARKS.finditer(data):
        at = match.start()
        if at == escaped:
            continue  # the character a backslash escapes
        mark = data[at]
        if in_string:
            if mark == 0x5C:  # backslash
                escaped = at + 1
            elif mark == 0x22:  # quote
                in_string = False
        elif mark == 0x22:
            in_string = True
        elif mark in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > bounds.max_depth:
                return (f"nests arrays or objects more than {bounds.max_depth} deep; "
                        f"{bounds.depth_reason}")
        elif mark in (0x5D, 0x7D):  # ] }
            depth -= 1
    return None
