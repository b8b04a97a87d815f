"""Stream entries in, validated trades or dead-letter reasons out.

An entry is one call of gsy-e's ``track_trade_event`` as the plug-in (or ``scripts/replay``)
wrote it: a single field ``event`` holding the JSON object
``{"market_id", "simulation_id", "time_slot", "trade": trade.serializable_dict()}``.
Parsing and range checks are ``pilotchain.trades``'s; this module adds what only a stream
can get wrong (missing field, not JSON, wrong trade type) and what the contract would
revert on (nil uuids), so a bad entry is dead-lettered instead of failing a whole batch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from pilotchain.safejson import JsonBounds, UnsafeJson, load_bounded
from pilotchain.trades import InvalidTrade, TradeRecord, parse_event
from worker.entries import Rejected

EVENT_FIELD = "event"
# What a gsy-e trade event may hold (the plug-in writes one trade.serializable_dict(): objects
# a few levels deep, ids as text, amounts as floats of at most 17 significant digits, times
# as text), generously: a stream entry beyond these is dead-lettered with the sentence, never
# raised (a 5,000-digit integer raised ValueError out of json.loads and stopped the bridge's
# loop on that entry).
EVENT_BOUNDS = JsonBounds(
    max_digits=40, max_depth=32, max_marks=100_000,
    digits_reason="no field of a trade takes more than 40 (amounts fit 96 bits).",
    fraction_reason="no amount of a trade is written that long.",
    constant_reason="amounts of a trade are finite numbers.",
    depth_reason="a gsy-e trade event is a few objects deep.",
    marks_reason="that is not one gsy-e trade event.",
    reader="the bridge")
TRADE_TYPE = "Trade"
NIL_UUID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class ValidTrade:
    """A stream entry that holds a trade the contract can record."""

    entry_id: str
    record: TradeRecord


def decode_entry(entry_id: str, fields: Mapping[str, str] | None) -> ValidTrade | Rejected:
    """Validate one stream entry (fields decoded to text; None once deleted from the stream)."""
    if fields is None:
        return Rejected(entry_id, "The entry was deleted from the stream (XDEL or trimming) "
                                  "before the bridge settled it; its trade cannot be read.", "")
    payload = fields.get(EVENT_FIELD)
    if payload is None:
        names = ", ".join(sorted(fields)) or "none"
        return Rejected(entry_id, f"The entry has no '{EVENT_FIELD}' field (fields: {names}).",
                        json.dumps(dict(fields)))
    try:
        event = load_bounded(payload, EVENT_BOUNDS, "The event")
    except UnsafeJson as error:
        return Rejected(entry_id, str(error), payload)
    problem = _type_problem(event)
    if problem is not None or not isinstance(event, dict):  # the latter for the type checker
        return Rejected(entry_id, problem or "The event must be a JSON object.", payload)
    try:
        record = parse_event(event)
    except InvalidTrade as error:
        return Rejected(entry_id, str(error), payload)
    problem = _nil_ids(record)
    if problem is not None:
        return Rejected(entry_id, problem, payload)
    return ValidTrade(entry_id, record)


def _type_problem(event: object) -> str | None:
    """Why the event is not a gsy-e Trade event, judged by its shape and ``type``."""
    if not isinstance(event, dict):
        return f"The event must be a JSON object, not {type(event).__name__}."
    trade = event.get("trade")
    if not isinstance(trade, dict):
        return None  # parse_event names the missing or malformed trade precisely
    kind = trade.get("type")
    if kind != TRADE_TYPE:
        trade_id = trade.get("id")
        which = f"Trade {trade_id}" if isinstance(trade_id, str) else "A trade"
        return (f"{which} cannot be recorded: field 'type' is {kind!r}, but only "
                f"gsy-e's {TRADE_TYPE!r} is settled.")
    return None


def _nil_ids(record: TradeRecord) -> str | None:
    """The contract refuses a zero trade id, seller or buyer (it reverts the batch)."""
    for name in ("trade_id", "seller", "buyer"):
        if getattr(record, name) == NIL_UUID:
            field = {"trade_id": "id", "seller": "seller.uuid", "buyer": "buyer.uuid"}[name]
            return (f"Trade {record.trade_id} cannot be recorded: field '{field}' is the nil "
                    "uuid, which the Settlement contract refuses.")
    return None
