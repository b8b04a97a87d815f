"""Signed meter readings as JSON, checked for shape; stream entries in, readings or reasons out.

The format (one JSON object per reading; the HTTP endpoint takes an array of them, MQTT one
per message, the stream one per entry in the field ``reading``)::

    {"meter": "<uuid, or 0x and 64 hex digits>", "time": <unix seconds>,
     "import_wh": <int>, "export_wh": <int>,
     "minutes_anchor": "0x<64 hex digits>", "signature": "0x<130 hex digits>"}

Every problem is a sentence naming the field, so a meter vendor can fix its export. What needs
the chain (the meter's key, its slot length) is checked by :mod:`ingest.validation`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pilotchain.metering import MAX_REGISTER, MeteringError, MeterReading, SignedReading, meter_id
from pilotchain.safejson import JsonBounds, UnsafeJson, load_bounded
from worker.entries import Rejected

READING_FIELD = "reading"
# The longest number a reading can hold: 2**64 - 1 has 20 digits. Anything longer is refused
# while parsing, before Python converts it (a 5,000-digit integer raised ValueError inside
# json.loads, past every check, and came out of the door as a 500).
MAX_DIGITS = 20
# Nesting json.loads may see: an upload is an array of flat objects (depth 2).
MAX_DEPTH = 16
# Brackets, quotes and backslashes one reading may hold (it has 14), generously.
MAX_MARKS = 4096
READING_BOUNDS = JsonBounds(
    max_digits=MAX_DIGITS, max_depth=MAX_DEPTH, max_marks=MAX_MARKS,
    digits_reason=(f"no field of a reading takes more than {MAX_DIGITS} (registers and times "
                   "lie in [0, 2**64))."),
    fraction_reason="no field of a reading takes a fraction, let alone one that long.",
    constant_reason="the fields of a reading are whole numbers and text.",
    depth_reason="readings are flat objects in one array.",
    marks_reason="that is not an upload of readings.",
    reader="the ingest")
FIELDS = ("meter", "time", "import_wh", "export_wh", "minutes_anchor", "signature")
# secp256k1's order / 2: the contract refuses a signature with s above it (malleable).
HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


class ReadingFormatError(MeteringError):
    """A reading does not have the documented shape; the message names the field."""


@dataclass(frozen=True, slots=True)
class ValidReading:
    """A stream entry holding a reading of the right shape."""

    entry_id: str
    signed: SignedReading
    payload: str


def load_json(text: str | bytes, what: str = "The reading",
              max_marks: int = MAX_MARKS) -> object:
    """Parse JSON with every number and the nesting bounded (pilotchain.safejson);
    ReadingFormatError says what is wrong. Integers longer than any field allows, NaN and
    Infinity and nesting deeper than MAX_DEPTH are refused with a sentence like any other
    malformed input. ``max_marks`` bounds the brackets, quotes and backslashes the nesting
    check walks (an upload of many readings needs more than one reading)."""
    bounds = READING_BOUNDS if max_marks == MAX_MARKS else replace(READING_BOUNDS,
                                                                   max_marks=max_marks)
    try:
        return load_bounded(text, bounds, what)
    except UnsafeJson as error:
        raise ReadingFormatError(str(error)) from None


def parse_reading(value: object) -> SignedReading:
    """A signed reading from its JSON object; ReadingFormatError says what is wrong."""
    if not isinstance(value, dict):
        raise ReadingFormatError(f"A reading must be a JSON object, not {_json_type(value)}.")
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise ReadingFormatError(f"Unknown field {_shown(unknown[0])}; a reading has exactly "
                                 f"{', '.join(FIELDS)}.")
    if value.get("signature") in (None, "", "0x"):
        raise ReadingFormatError("The reading is not signed: field 'signature' is missing or "
                                 "empty.")
    missing = [name for name in FIELDS if name not in value]
    if missing:
        raise ReadingFormatError(f"Field {missing[0]!r} is missing.")
    reading = MeterReading(
        meter=meter_bytes(value["meter"]),
        time=_integer(value, "time"),
        import_wh=_integer(value, "import_wh"),
        export_wh=_integer(value, "export_wh"),
        minutes_anchor=_hex(value, "minutes_anchor", 32),
    )
    signature = _hex(value, "signature", 65)
    problem = signature_problem(signature)
    if problem is not None:
        raise ReadingFormatError(problem)
    return SignedReading(reading, signature)


def reading_json(signed: SignedReading) -> dict[str, object]:
    """The JSON object of a signed reading (the meter as 0x bytes32)."""
    r = signed.reading
    return {"meter": "0x" + r.meter.hex(), "time": r.time, "import_wh": r.import_wh,
            "export_wh": r.export_wh, "minutes_anchor": "0x" + r.minutes_anchor.hex(),
            "signature": "0x" + signed.signature.hex()}


def signature_problem(signature: bytes) -> str | None:
    """Why the contract would recover no signer from ``signature``, as a sentence."""
    if len(signature) != 65:
        return f"Field 'signature' must be 65 bytes (r, s, v), not {len(signature)}."
    if signature[64] not in (27, 28):
        return f"Field 'signature' has v = {signature[64]}; it must be 27 or 28."
    if int.from_bytes(signature[32:64], "big") > HALF_ORDER:
        return ("Field 'signature' has s in the upper half of the curve order (a malleable "
                "signature); sign with a standard library, which normalises s.")
    return None


def decode_entry(entry_id: str, fields: Mapping[str, str] | None) -> ValidReading | Rejected:
    """Check one stream entry's shape (fields decoded to text; None once deleted)."""
    if fields is None:
        return Rejected(entry_id, "The entry was deleted from the stream (XDEL or trimming) "
                                  "before the ingest settled it; its reading cannot be read.", "")
    payload = fields.get(READING_FIELD)
    if payload is None:
        names = ", ".join(sorted(fields)) or "none"
        return Rejected(entry_id, f"The entry has no '{READING_FIELD}' field (fields: "
                                  f"{names}).", json.dumps(dict(fields)))
    try:
        signed = parse_reading(load_json(payload))
    except MeteringError as error:
        return Rejected(entry_id, str(error), payload)
    return ValidReading(entry_id, signed, payload)


def meter_bytes(value: object) -> bytes:
    """A meter id from its JSON form: a uuid, or 0x and 64 hex digits (not zero)."""
    if isinstance(value, str):
        if value.startswith("0x"):
            try:
                raw = bytes.fromhex(value[2:])
            except ValueError:
                raw = b""
            if len(raw) == 32 and any(raw):
                return raw
        else:
            try:
                parsed = uuid.UUID(value)
            except ValueError:
                parsed = uuid.UUID(int=0)
            if parsed.int:
                return meter_id(parsed)
    raise ReadingFormatError(f"Field 'meter' must be a uuid or 0x and 64 hex digits (not "
                             f"zero), not {_shown(value)}.")


def _integer(value: Mapping[str, object], name: str) -> int:
    number = value[name]
    if not isinstance(number, int) or isinstance(number, bool):
        raise ReadingFormatError(f"Field {name!r} must be a whole number, not "
                                 f"{_shown(number)}.")
    if not 0 <= number <= MAX_REGISTER:
        raise ReadingFormatError(f"Field {name!r} must lie in [0, 2**64), not {number}.")
    return number


def _hex(value: Mapping[str, object], name: str, size: int) -> bytes:
    text = value[name]
    if isinstance(text, str) and text.startswith("0x"):
        try:
            raw = bytes.fromhex(text[2:])
        except ValueError:
            raw = None
        if raw is not None and len(raw) == size:
            return raw
    raise ReadingFormatError(f"Field {name!r} must be 0x and {2 * size} hex digits ({size} "
                             f"bytes), not {_shown(text)}.")


def _shown(value: object) -> str:
    """A value as JSON for a message, cut to 80 characters (an item may be megabytes)."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | float) else type(value).__name__
