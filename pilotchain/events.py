"""The Settlement contract's events: one catalogue, and one decoder for their logs.

Every event the contract itself declares (AccessControl's role events are not ours) with its
inputs in order: the contract's name for each in snake_case, its ABI type, whether it is
indexed. Signatures and topics are derived from these, so no other module writes an event
signature, and logs decode without an ABI file or a compiler at run time; a test checks each
entry against the compiled contract's ABI.

:func:`decode_log` turns a log (from a receipt, ``eth_getLogs`` or the node's raw JSON) into
the event's name and its values: ``bytes32`` as bytes, integers as ints, addresses
checksummed. What the values mean (uuids, rates, table rows) is for the modules that use
them. Every input of these events is a static type, so an indexed one's topic is its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from pilotchain.errors import TradeFormatError


class InvalidLog(TradeFormatError):
    """A log carries the topic of one of the Settlement contract's events but does not
    decode as that event."""


@dataclass(frozen=True)
class Input:
    """One input of an event: the contract's name in snake_case, its ABI type."""

    name: str
    abi_type: str
    indexed: bool = False


@dataclass(frozen=True)
class Event:
    """One event of the Settlement contract."""

    name: str
    inputs: tuple[Input, ...]

    @cached_property
    def signature(self) -> str:
        return f"{self.name}({','.join(i.abi_type for i in self.inputs)})"

    @cached_property
    def topic(self) -> bytes:
        return keccak(text=self.signature)

    @cached_property
    def indexed(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if i.indexed)

    @cached_property
    def data(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if not i.indexed)


@dataclass(frozen=True)
class Decoded:
    """A log of the contract as its event and values, by input name in the event's order."""

    event: Event
    values: dict[str, Any]

    @property
    def name(self) -> str:
        return self.event.name


def _event(name: str, *inputs: tuple[str, str] | tuple[str, str, bool]) -> Event:
    return Event(name, tuple(Input(*spec) for spec in inputs))


INDEXED = True

TRADE_SETTLED = _event(
    "TradeSettled", ("trade_id", "bytes32", INDEXED), ("seller", "bytes32", INDEXED),
    ("buyer", "bytes32", INDEXED), ("market", "bytes32"), ("time_slot", "uint64"),
    ("seller_origin", "bytes32"), ("buyer_origin", "bytes32"), ("energy", "uint96"),
    ("price", "uint96"), ("fee", "uint96"))
BATCH_RECORDED = _event("BatchRecorded", ("recorded", "uint256"), ("skipped", "uint256"))
PARTICIPANT_REGISTERED = _event(
    "ParticipantRegistered", ("participant", "bytes32", INDEXED), ("wallet", "address", INDEXED))
PARTICIPANT_UNREGISTERED = _event(
    "ParticipantUnregistered", ("participant", "bytes32", INDEXED),
    ("wallet", "address", INDEXED))
BOUNDARY_TRADE_AFTER_CLOSE = _event(
    "BoundaryTradeAfterClose", ("trade_id", "bytes32", INDEXED),
    ("participant", "bytes32", INDEXED), ("slot", "uint64"))
METER_REGISTERED = _event(
    "MeterRegistered", ("meter", "bytes32", INDEXED), ("participant", "bytes32", INDEXED),
    ("signer", "address"), ("home_area", "bytes32"), ("active_from", "uint64"))
METER_DEACTIVATED = _event(
    "MeterDeactivated", ("meter", "bytes32", INDEXED), ("participant", "bytes32", INDEXED),
    ("active_until", "uint64"))
READING_RECORDED = _event(
    "ReadingRecorded", ("meter", "bytes32", INDEXED), ("time", "uint64", INDEXED),
    ("import_wh", "uint64"), ("export_wh", "uint64"), ("minutes_anchor", "bytes32"))
# reason: the contract's Refusal enum (pilotchain.metering.Refusal), a uint8 in the ABI.
READING_REFUSED = _event(
    "ReadingRefused", ("index", "uint256"), ("meter", "bytes32", INDEXED), ("time", "uint64"),
    ("reason", "uint8"))
READINGS_SUBMITTED = _event(
    "ReadingsSubmitted", ("recorded", "uint256"), ("duplicates", "uint256"),
    ("refused", "uint256"))
SLOT_SECONDS_SET = _event("SlotSecondsSet", ("slot_seconds", "uint64"))
CLOSE_DELAY_SET = _event("CloseDelaySet", ("close_delay", "uint64"))
RATES_SET = _event(
    "RatesSet", ("from_slot", "uint64", INDEXED), ("shortfall_rate", "uint96"),
    ("grid_supply_rate", "uint96"), ("feed_in_rate", "uint96"))
SLOT_BALANCED = _event(
    "SlotBalanced", ("participant", "bytes32", INDEXED), ("slot", "uint64", INDEXED),
    ("meter", "bytes32"), ("import_energy", "uint256"), ("export_energy", "uint256"),
    ("sold", "uint256"), ("bought", "uint256"), ("shortfall_charge", "uint256"),
    ("excess_charge", "uint256"), ("surplus_credit", "uint256"))
SLOT_UNMETERED = _event(
    "SlotUnmetered", ("participant", "bytes32", INDEXED), ("slot", "uint64", INDEXED),
    ("sold", "uint256"), ("bought", "uint256"))
PERIOD_CLOSED = _event(
    "PeriodClosed", ("period", "uint256", INDEXED), ("end_slot", "uint64"))
STATEMENT_PAID = _event(
    "StatementPaid", ("period", "uint256", INDEXED), ("participant", "bytes32", INDEXED))

EVENTS: tuple[Event, ...] = (
    TRADE_SETTLED, BATCH_RECORDED, PARTICIPANT_REGISTERED, PARTICIPANT_UNREGISTERED,
    BOUNDARY_TRADE_AFTER_CLOSE, METER_REGISTERED, METER_DEACTIVATED, READING_RECORDED,
    READING_REFUSED, READINGS_SUBMITTED, SLOT_SECONDS_SET, CLOSE_DELAY_SET, RATES_SET,
    SLOT_BALANCED, SLOT_UNMETERED, PERIOD_CLOSED, STATEMENT_PAID,
)
BY_NAME: dict[str, Event] = {event.name: event for event in EVENTS}
BY_TOPIC: dict[bytes, Event] = {event.topic: event for event in EVENTS}


def event_of(log: Mapping[str, Any]) -> Event | None:
    """The catalogue's event whose topic ``log`` carries first; None for any other log."""
    topics = log.get("topics") or ()
    return BY_TOPIC.get(as_bytes(topics[0])) if topics else None


def decode_log(log: Mapping[str, Any]) -> Decoded | None:
    """The event and values of a log of the contract; None if it is none of its events.

    Raises :class:`InvalidLog` if the log has an event's topic but not its shape.
    """
    event = event_of(log)
    return None if event is None else decode_as(event, log)


def decode_as(event: Event, log: Mapping[str, Any]) -> Decoded:
    """``log`` decoded as ``event``, whose topic the caller has found in it."""
    try:
        topics = [as_bytes(topic) for topic in log.get("topics") or ()][1:]
        if len(topics) != len(event.indexed):
            raise ValueError(f"it has {len(topics)} indexed topics, the event {len(event.indexed)}")
        raw = dict(zip((i.name for i in event.indexed),
                       abi_decode([i.abi_type for i in event.indexed], b"".join(topics)),
                       strict=True))
        raw.update(zip((i.name for i in event.data),
                       abi_decode([i.abi_type for i in event.data],
                                  as_bytes(log.get("data") or b"")),
                       strict=True))
    except (DecodingError, ValueError) as error:
        raise undecodable(event.name, log, error) from None
    return Decoded(event, {i.name: _plain(i, raw[i.name]) for i in event.inputs})


def undecodable(name: str, log: Mapping[str, Any], problem: object) -> InvalidLog:
    """The error for a ``name`` log that does not decode (or whose values mean nothing),
    saying where it is when the log says so."""
    where = ""
    if log.get("blockNumber") is not None:
        where = f" in block {as_int(log['blockNumber'])}"
        if log.get("logIndex") is not None:
            where += f" (index {as_int(log['logIndex'])})"
    return InvalidLog(f"The {name} log{where} cannot be decoded: {problem}")


def _plain(item: Input, value: Any) -> Any:
    if item.abi_type == "address":
        return to_checksum_address(value)
    if item.abi_type.startswith("bytes"):
        return bytes(value)
    return value


def as_bytes(value: bytes | str) -> bytes:
    """A topic or data as bytes, from bytes, HexBytes or the node's ``0x`` hex text."""
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return bytes(value)


def as_int(value: str | int) -> int:
    """A quantity as the node sends it (hex) or as web3 formats it (int)."""
    return int(value, 16) if isinstance(value, str) else int(value)
