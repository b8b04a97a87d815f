"""The Settlement contract's events the portal keeps, and how each log becomes a table row.

Decoded here from the event signatures (no ABI file or compiler at run time); a test checks
every signature and its indexed inputs against the compiled contract's ABI. Columns are
typed by kind:

* ``id``: a ``bytes32`` id as text, the gsy-e uuid when it is one (zero-padded on the left,
  as every trade party and participant is), else ``0x`` and 64 hex digits (the grid
  operator's ``OPERATOR``, a hashed meter id), so the same id reads the same in every table;
* ``int``: fits a signed 64-bit column (times, slots, periods);
* ``amount``: an unsigned integer of up to 256 bits, kept exactly (see ``portal.schema``);
* ``address``: a checksummed wallet address; ``hex``: other ``bytes32`` values.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from pilotchain.trades import (
    TRADE_SETTLED_SIGNATURE,
    TRADE_SETTLED_TOPIC,
    TradeFormatError,
    decode_trade_settled,
)
from portal.errors import PortalError

Kind = Literal["id", "int", "amount", "address", "hex"]


class UndecodableLog(PortalError):
    """A log of the contract carries one of the known topics but does not decode."""


@dataclass(frozen=True)
class Field:
    column: str
    abi_type: str
    kind: Kind
    indexed: bool = False


@dataclass(frozen=True)
class EventSpec:
    """One event: its ABI name and inputs, and the table (and fixed columns) it fills."""

    name: str
    table: str
    fields: tuple[Field, ...]
    fixed: tuple[tuple[str, str], ...] = ()

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(f.abi_type for f in self.fields)})"

    @property
    def topic(self) -> bytes:
        return keccak(text=self.signature)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*(f.column for f in self.fields), *(name for name, _ in self.fixed))


def _f(column: str, abi_type: str, kind: Kind, indexed: bool = False) -> Field:
    return Field(column, abi_type, kind, indexed)


_WALLET = (_f("participant", "bytes32", "id", True), _f("wallet", "address", "address", True))
TRADES_TABLE = "trades"
TRADE_COLUMNS = ("trade_id", "market", "time_slot", "seller", "buyer", "seller_origin",
                 "buyer_origin", "energy", "price", "fee")
# TradeSettled is decoded by pilotchain.trades (the bridge's own decoder); its fields are
# listed here for the signature check only.
TRADE_SETTLED = EventSpec("TradeSettled", TRADES_TABLE, (
    _f("trade_id", "bytes32", "id", True), _f("seller", "bytes32", "id", True),
    _f("buyer", "bytes32", "id", True), _f("market", "bytes32", "id"),
    _f("time_slot", "uint64", "int"), _f("seller_origin", "bytes32", "id"),
    _f("buyer_origin", "bytes32", "id"), _f("energy", "uint96", "amount"),
    _f("price", "uint96", "amount"), _f("fee", "uint96", "amount")))

EVENTS: tuple[EventSpec, ...] = (
    TRADE_SETTLED,
    EventSpec("ParticipantRegistered", "wallet_events", _WALLET, (("action", "registered"),)),
    EventSpec("ParticipantUnregistered", "wallet_events", _WALLET, (("action", "unregistered"),)),
    EventSpec("MeterRegistered", "meters_registered", (
        _f("meter", "bytes32", "id", True), _f("participant", "bytes32", "id", True),
        _f("signer", "address", "address"), _f("home_area", "bytes32", "id"),
        _f("active_from", "uint64", "int"))),
    EventSpec("MeterDeactivated", "meters_deactivated", (
        _f("meter", "bytes32", "id", True), _f("participant", "bytes32", "id", True),
        _f("active_until", "uint64", "int"))),
    # Registers are the meter's own numbers: kept exactly, whatever a faulty meter signs.
    EventSpec("ReadingRecorded", "readings", (
        _f("meter", "bytes32", "id", True), _f("time", "uint64", "int", True),
        _f("import_wh", "uint64", "amount"), _f("export_wh", "uint64", "amount"),
        _f("minutes_anchor", "bytes32", "hex"))),
    EventSpec("SlotBalanced", "slots_balanced", (
        _f("participant", "bytes32", "id", True), _f("slot", "uint64", "int", True),
        _f("meter", "bytes32", "id"), _f("import_energy", "uint256", "amount"),
        _f("export_energy", "uint256", "amount"), _f("sold", "uint256", "amount"),
        _f("bought", "uint256", "amount"), _f("shortfall_charge", "uint256", "amount"),
        _f("excess_charge", "uint256", "amount"), _f("surplus_credit", "uint256", "amount"))),
    EventSpec("SlotUnmetered", "slots_unmetered", (
        _f("participant", "bytes32", "id", True), _f("slot", "uint64", "int", True),
        _f("sold", "uint256", "amount"), _f("bought", "uint256", "amount"))),
    EventSpec("RatesSet", "rates", (
        _f("from_slot", "uint64", "int", True), _f("shortfall_rate", "uint96", "amount"),
        _f("grid_supply_rate", "uint96", "amount"), _f("feed_in_rate", "uint96", "amount"))),
    EventSpec("PeriodClosed", "periods", (
        _f("period", "uint256", "int", True), _f("end_slot", "uint64", "int"))),
    EventSpec("StatementPaid", "statements_paid", (
        _f("period", "uint256", "int", True), _f("participant", "bytes32", "id", True))),
)
assert TRADE_SETTLED.signature == TRADE_SETTLED_SIGNATURE
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
    topics = [_bytes(topic) for topic in log.get("topics", ())]
    spec = BY_TOPIC.get(topics[0]) if topics else None
    if spec is None:
        return None
    where = (_int(log["blockNumber"]), _int(log["logIndex"]),
             "0x" + _bytes(log["transactionHash"]).hex())
    try:
        values = _trade(log) if topics[0] == TRADE_SETTLED_TOPIC else _values(spec, topics, log)
    except (DecodingError, PortalError, ValueError) as error:
        raise UndecodableLog(
            f"The {spec.name} log {where[1]} of block {where[0]} cannot be decoded: {error}"
        ) from None
    return Row(spec.table, *where, values)


def _trade(log: Mapping[str, Any]) -> dict[str, Any]:
    try:
        record = decode_trade_settled(log)
    except TradeFormatError as error:
        raise ValueError(str(error)) from None
    return {"trade_id": str(record.trade_id), "market": str(record.market),
            "time_slot": record.time_slot, "seller": str(record.seller),
            "buyer": str(record.buyer), "seller_origin": str(record.seller_origin),
            "buyer_origin": str(record.buyer_origin), "energy": record.energy,
            "price": record.price, "fee": record.fee}


def _values(spec: EventSpec, topics: Sequence[bytes], log: Mapping[str, Any]) -> dict[str, Any]:
    indexed = [f for f in spec.fields if f.indexed]
    if len(topics) != len(indexed) + 1:
        raise ValueError(f"{len(topics) - 1} indexed topics, expected {len(indexed)}")
    data = [f for f in spec.fields if not f.indexed]
    raw = dict(zip((f.column for f in indexed),
                   (abi_decode([f.abi_type], topic)[0] for f, topic in zip(indexed, topics[1:],
                                                                          strict=True)),
                   strict=True))
    raw.update(zip((f.column for f in data),
                   abi_decode([f.abi_type for f in data], _bytes(log.get("data", b""))),
                   strict=True))
    values = {f.column: _typed(f, raw[f.column]) for f in spec.fields}
    values.update(spec.fixed)
    return values


def _typed(field: Field, value: Any) -> Any:
    if field.kind == "id":
        return id_text(bytes(value))
    if field.kind == "hex":
        return "0x" + bytes(value).hex()
    if field.kind == "address":
        return to_checksum_address(value)
    if field.kind == "int" and value >= 2**63:
        raise ValueError(f"{field.column} {value} does not fit a 64-bit column")
    return int(value)


def _int(value: str | int) -> int:
    """A quantity as the node sends it (hex) or as web3 formats it (int)."""
    return int(value, 16) if isinstance(value, str) else int(value)


def _bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return bytes(value)
