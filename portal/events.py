"""The Settlement contract's events the portal keeps, and how each log becomes a table row.

The events themselves (names, inputs, topics) and their decoding are the core's
(:mod:`pilotchain.events`, checked against the compiled contract's ABI); this module only maps
each kept event to its table, a column per input (named as the input) and the column's kind:

* ``id``: a ``bytes32`` id as text, the gsy-e uuid when it is one (zero-padded on the left,
  as every trade party and participant is), else ``0x`` and 64 hex digits (the grid
  operator's ``OPERATOR``, a hashed meter id), so the same id reads the same in every table;
* ``int``: fits a signed 64-bit column (times, slots, periods);
* ``amount``: an unsigned integer of up to 256 bits, kept exactly (see ``portal.schema``);
* ``address``: a checksummed wallet address; ``hex``: other ``bytes32`` values.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pilotchain import events as core
from pilotchain.events import InvalidLog, as_bytes, as_int
from pilotchain.trades import decode_trade_settled
from portal.errors import PortalError

Kind = Literal["id", "int", "amount", "address", "hex"]


class UndecodableLog(PortalError):
    """A log of the contract carries one of the known topics but does not decode."""


@dataclass(frozen=True)
class Field:
    """One column of an event's table: the event's input of that name, and its kind."""

    column: str
    abi_type: str
    kind: Kind
    indexed: bool = False


@dataclass(frozen=True)
class EventSpec:
    """One event of the core catalogue, the table it fills: a column per input, of the
    kind given for it, and fixed columns."""

    event: core.Event
    table: str
    fields: tuple[Field, ...]
    fixed: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.event.name

    @property
    def topic(self) -> bytes:
        return self.event.topic

    @property
    def columns(self) -> tuple[str, ...]:
        return (*(f.column for f in self.fields), *(name for name, _ in self.fixed))


def _spec(event: core.Event, table: str, fixed: tuple[tuple[str, str], ...] = (),
          **kinds: Kind) -> EventSpec:
    """``event``'s table, given each input's kind by its name (every input, no other)."""
    names = [item.name for item in event.inputs]
    if sorted(kinds) != sorted(names):
        raise ValueError(f"The portal's {event.name} columns {sorted(kinds)} are not its inputs "
                         f"{sorted(names)}.")
    return EventSpec(event, table, tuple(Field(item.name, item.abi_type, kinds[item.name],
                                               item.indexed) for item in event.inputs), fixed)


TRADES_TABLE = "trades"
TRADE_COLUMNS = ("trade_id", "market", "time_slot", "seller", "buyer", "seller_origin",
                 "buyer_origin", "energy", "price", "fee")
# TradeSettled is decoded by pilotchain.trades (the bridge's own decoder, which refuses ids
# that are not uuids); its kinds here name the columns' types.
TRADE_SETTLED = _spec(
    core.TRADE_SETTLED, TRADES_TABLE, trade_id="id", seller="id", buyer="id", market="id",
    time_slot="int", seller_origin="id", buyer_origin="id", energy="amount", price="amount",
    fee="amount")
_WALLET: dict[str, Kind] = {"participant": "id", "wallet": "address"}

EVENTS: tuple[EventSpec, ...] = (
    TRADE_SETTLED,
    _spec(core.PARTICIPANT_REGISTERED, "wallet_events", (("action", "registered"),), **_WALLET),
    _spec(core.PARTICIPANT_UNREGISTERED, "wallet_events", (("action", "unregistered"),),
          **_WALLET),
    _spec(core.METER_REGISTERED, "meters_registered", meter="id", participant="id",
          signer="address", home_area="id", active_from="int"),
    _spec(core.METER_DEACTIVATED, "meters_deactivated", meter="id", participant="id",
          active_until="int"),
    # Registers are the meter's own numbers: kept exactly, whatever a faulty meter signs.
    _spec(core.READING_RECORDED, "readings", meter="id", time="int", import_wh="amount",
          export_wh="amount", minutes_anchor="hex"),
    _spec(core.SLOT_BALANCED, "slots_balanced", participant="id", slot="int", meter="id",
          import_energy="amount", export_energy="amount", sold="amount", bought="amount",
          shortfall_charge="amount", excess_charge="amount", surplus_credit="amount"),
    _spec(core.SLOT_UNMETERED, "slots_unmetered", participant="id", slot="int", sold="amount",
          bought="amount"),
    _spec(core.RATES_SET, "rates", from_slot="int", shortfall_rate="amount",
          grid_supply_rate="amount", feed_in_rate="amount"),
    _spec(core.PERIOD_CLOSED, "periods", period="int", end_slot="int"),
    _spec(core.STATEMENT_PAID, "statements_paid", period="int", participant="id"),
)
BY_TOPIC: dict[bytes, EventSpec] = {spec.topic: spec for spec in EVENTS}
TOPICS: tuple[bytes, ...] = tuple(BY_TOPIC)
TABLES: tuple[str, ...] = tuple(dict.fromkeys(spec.table for spec in EVENTS))


@dataclass(frozen=True)
class Row:
    """One event as a row of ``table``: where it happened, and its columns."""

    table: str
    block_number: int
    log_index: int
    tx_hash: str
    values: Mapping[str, Any]


def id_text(raw: bytes) -> str:
    """A ``bytes32`` id as the portal shows it: the uuid if it is one, else 0x-hex."""
    if len(raw) == 32 and not any(raw[:16]):
        return str(uuid.UUID(bytes=raw[16:]))
    return "0x" + raw.hex()


def decode(log: Mapping[str, Any]) -> Row | None:
    """The row of a log of the contract; None for events the portal does not keep
    (BatchRecorded, ReadingRefused, ...)."""
    topics = log.get("topics") or ()
    spec = BY_TOPIC.get(as_bytes(topics[0])) if topics else None
    if spec is None:
        return None
    where = (as_int(log["blockNumber"]), as_int(log["logIndex"]),
             "0x" + as_bytes(log["transactionHash"]).hex())
    try:
        values = _trade(log) if spec is TRADE_SETTLED else _values(spec, log)
    except InvalidLog as error:  # its sentence says which log, by block and index
        raise UndecodableLog(str(error)) from None
    except ValueError as error:
        raise UndecodableLog(
            f"The {spec.name} log {where[1]} of block {where[0]} cannot be decoded: {error}"
        ) from None
    return Row(spec.table, *where, values)


def _trade(log: Mapping[str, Any]) -> dict[str, Any]:
    record = decode_trade_settled(log)
    return {"trade_id": str(record.trade_id), "market": str(record.market),
            "time_slot": record.time_slot, "seller": str(record.seller),
            "buyer": str(record.buyer), "seller_origin": str(record.seller_origin),
            "buyer_origin": str(record.buyer_origin), "energy": record.energy,
            "price": record.price, "fee": record.fee}


def _values(spec: EventSpec, log: Mapping[str, Any]) -> dict[str, Any]:
    decoded = core.decode_as(spec.event, log).values
    values = {f.column: _typed(f, decoded[f.column]) for f in spec.fields}
    values.update(spec.fixed)
    return values


def _typed(field: Field, value: Any) -> Any:
    if field.kind == "id":
        return id_text(value)
    if field.kind == "hex":
        return "0x" + value.hex()
    if field.kind == "address":
        return str(value)
    if field.kind == "int" and value >= 2**63:
        raise ValueError(f"{field.column} {value} does not fit a 64-bit column")
    return int(value)
