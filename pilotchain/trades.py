"""gsy-e trades in the Settlement contract's format, and the reference bills.

Pure and fast on purpose (no web3 I/O): the bridge parses every gsy-e trade with it.

Format (the contract's ``Trade`` struct and ``TradeSettled`` event):

* **Ids** (trade, market, seller, buyer and their origins) are gsy-e uuids as ``bytes32``:
  the uuid's 128-bit integer, zero-padded on the left, so every record maps back to gsy-e.
* **Seller / buyer** are the parties *in this market* (``trade.seller.uuid``), which for a
  forwarded leg of a match is an area; the **origins** (``origin_uuid``) are the devices
  that placed the orders.
* **Time slot**: the market slot's start as unix seconds (gsy-e writes it in UTC without a
  zone).
* **Energy** is kWh * 10**ENERGY_DECIMALS; **price** and **fee** are euro cents *
  10**PRICE_DECIMALS. Both scales are 18 (at least 6 are needed): gsy-e rounds
  rates to 8 decimals and a price is energy x rate, so prices carry more decimals than
  energies (up to 12 in the recordings). A double's shortest form has at most 17
  significant digits, so 18 decimals keep every value of at least 0.01 exactly, every
  recorded value exactly, and anything smaller to 1e-18. A uint96 amount still holds
  7.9e10 kWh (or cents) per trade, and the uint128 bills cannot overflow before 2**32
  such trades. 18 is also the ether/ERC-20 convention wallets and explorers format.

Conversion from float takes the float's shortest decimal form (what ``repr`` and gsy-e's
JSON show) and rounds it half-to-even at the scale, so a float and its JSON text always give
the same integer, and converting back gives the same float whenever the value has at most
18 decimals.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import Any

from pilotchain.errors import TradeFormatError
from pilotchain.events import (
    BATCH_RECORDED,
    TRADE_SETTLED,
    InvalidLog,
    decode_as,
    event_of,
    undecodable,
)

ENERGY_DECIMALS = 18
PRICE_DECIMALS = 18
# The contract's uint96 amounts (see the module docstring for why 96 bits).
MAX_AMOUNT = 2**96 - 1
MAX_TIME_SLOT = 2**64 - 1

TRADE_SETTLED_SIGNATURE = TRADE_SETTLED.signature
TRADE_SETTLED_TOPIC = TRADE_SETTLED.topic
BATCH_RECORDED_TOPIC = BATCH_RECORDED.topic

# Wide enough for any uint128 at scale 18, so no conversion rounds by accident.
_DECIMAL_CONTEXT = Context(prec=80)


class InvalidTrade(TradeFormatError):
    """A gsy-e trade is malformed; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str, trade_id: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.trade_id = trade_id
        which = f"Trade {trade_id}" if trade_id else "A trade"
        super().__init__(f"{which} cannot be recorded: {field} {problem}.")


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One gsy-e trade as the contract records it: ids as uuids, amounts as scaled ints."""

    trade_id: uuid.UUID
    market: uuid.UUID
    time_slot: int
    seller: uuid.UUID
    buyer: uuid.UUID
    seller_origin: uuid.UUID
    buyer_origin: uuid.UUID
    energy: int
    price: int
    fee: int

    def as_contract_tuple(self) -> tuple[bytes | int, ...]:
        """The contract's ``Trade`` struct, field for field, ready for ``recordTrades``."""
        return (
            uuid_to_bytes32(self.trade_id),
            uuid_to_bytes32(self.market),
            self.time_slot,
            uuid_to_bytes32(self.seller),
            uuid_to_bytes32(self.buyer),
            uuid_to_bytes32(self.seller_origin),
            uuid_to_bytes32(self.buyer_origin),
            self.energy,
            self.price,
            self.fee,
        )

    def as_gsy_fields(self) -> dict[str, Any]:
        """The record in gsy-e's names and units, to compare with a ``serializable_dict``."""
        return {
            "id": str(self.trade_id),
            "market_id": str(self.market),
            "time_slot": format_time_slot(self.time_slot),
            "seller": {"uuid": str(self.seller), "origin_uuid": str(self.seller_origin)},
            "buyer": {"uuid": str(self.buyer), "origin_uuid": str(self.buyer_origin)},
            "energy": from_fixed(self.energy, ENERGY_DECIMALS),
            "price": from_fixed(self.price, PRICE_DECIMALS),
            "fee_price": from_fixed(self.fee, PRICE_DECIMALS),
        }


@dataclass(frozen=True, slots=True)
class Bill:
    """A participant's running totals, scaled like the trades (see the module docstring)."""

    energy_sold: int = 0
    energy_bought: int = 0
    money_receivable: int = 0
    money_payable: int = 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        """In the order of the contract's ``billOf`` outputs."""
        return (self.energy_sold, self.energy_bought, self.money_receivable, self.money_payable)


# --- ids -------------------------------------------------------------------------------


def uuid_to_bytes32(value: uuid.UUID | str) -> bytes:
    """A uuid as bytes32: its 128-bit integer, zero-padded on the left."""
    as_uuid = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    return bytes(16) + as_uuid.bytes


def bytes32_to_uuid(value: bytes) -> uuid.UUID:
    """The uuid an id ``bytes32`` stands for; refuses values that are not one."""
    raw = bytes(value)
    if len(raw) != 32 or any(raw[:16]):
        raise TradeFormatError(f"0x{raw.hex()} is not a gsy-e id (a uuid zero-padded to 32 bytes).")
    return uuid.UUID(bytes=raw[16:])


# --- fixed point -------------------------------------------------------------------------


def to_fixed(value: float | int | Decimal, decimals: int) -> int:
    """``value * 10**decimals`` rounded half-to-even, from the float's shortest decimal form.

    Raises ``ValueError`` for NaN and infinities; callers that know the field name wrap it.
    """
    if isinstance(value, bool) or not isinstance(value, float | int | Decimal):
        raise TypeError(f"expected a number, not {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        exact = Decimal(repr(value))
    else:
        exact = Decimal(value)
        if not exact.is_finite():
            raise ValueError(f"{value} is not a finite number")
    try:
        scaled = exact.scaleb(decimals, _DECIMAL_CONTEXT)
        return int(scaled.to_integral_value(ROUND_HALF_EVEN, _DECIMAL_CONTEXT))
    except ArithmeticError as error:  # decimal's Overflow and InvalidOperation
        raise ValueError(f"{value} cannot be scaled by 10**{decimals}") from error


def from_fixed(value: int, decimals: int) -> float:
    """The float nearest to ``value / 10**decimals`` (correctly rounded, no float division)."""
    return float(f"{value}e-{decimals}")


def kwh_to_fixed(kwh: float) -> int:
    """Energy in kWh to the contract's scaled integer."""
    return to_fixed(kwh, ENERGY_DECIMALS)


def cents_to_fixed(cents: float) -> int:
    """Money in euro cents to the contract's scaled integer."""
    return to_fixed(cents, PRICE_DECIMALS)


# --- time slots --------------------------------------------------------------------------


def parse_time_slot(value: str) -> int:
    """Unix seconds of a gsy-e time slot; a zone-less time is UTC, as gsy-e writes it.

    Raises ``ValueError`` when the text is not an ISO time on a whole second.
    """
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.microsecond:
        raise ValueError("is not on a whole second")
    return int(moment.timestamp())


def format_time_slot(unix_seconds: int) -> str:
    """A time slot the way gsy-e writes it: ISO, UTC, no zone."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


# --- parsing gsy-e trades ----------------------------------------------------------------


def parse_event(event: Mapping[str, Any]) -> TradeRecord:
    """One call of gsy-e's ``track_trade_event`` as recorded: market id, time slot, trade."""
    if not isinstance(event, Mapping):
        raise InvalidTrade("the event", f"must be a JSON object, not {type(event).__name__}")
    for key in ("market_id", "trade"):
        if key not in event:
            raise InvalidTrade(f"event field '{key}'", "is missing")
    slot = event.get("time_slot")
    return parse_trade(event["trade"], event["market_id"], time_slot=slot)


def parse_trade(
    trade: Mapping[str, Any],
    market_id: str | uuid.UUID,
    *,
    time_slot: str | datetime | None = None,
) -> TradeRecord:
    """A gsy-e ``trade.serializable_dict()`` of market ``market_id`` as a ``TradeRecord``.

    ``time_slot`` is the slot gsy-e passes to its hook; it must agree with the trade's own
    ``time_slot`` and stands in for it when the trade has none. A null ``fee_price`` is 0
    (gsy-e's default) and a null ``origin_uuid`` means the party is its own origin.
    """
    if not isinstance(trade, Mapping):
        raise InvalidTrade("the trade", f"must be a JSON object, not {type(trade).__name__}")
    trade_id = _uuid_field(trade, "id", None)
    tid = str(trade_id)
    market = _as_uuid(market_id, "market_id", tid)
    seller, seller_origin = _party(trade, "seller", tid)
    buyer, buyer_origin = _party(trade, "buyer", tid)
    energy = _amount(trade, "energy", ENERGY_DECIMALS, tid, positive=True)
    price = _amount(trade, "price", PRICE_DECIMALS, tid, positive=False)
    fee = _amount(trade, "fee_price", PRICE_DECIMALS, tid, positive=False, null_is_zero=True)
    return TradeRecord(
        trade_id=trade_id,
        market=market,
        time_slot=_time_slot(trade, time_slot, tid),
        seller=seller,
        buyer=buyer,
        seller_origin=seller_origin,
        buyer_origin=buyer_origin,
        energy=energy,
        price=price,
        fee=fee,
    )


def iter_recording(lines: Iterable[str]) -> Iterator[TradeRecord]:
    """Parse JSON lines of recorded ``track_trade_event`` calls; blank lines are skipped."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidTrade(f"line {number}", f"is not JSON ({error.msg})") from None
        yield parse_event(event)


def read_recording(path: Path) -> list[TradeRecord]:
    """All trades of a JSON-lines recording file."""
    with path.open(encoding="utf-8") as lines:
        return list(iter_recording(lines))


def _uuid_field(container: Mapping[str, Any], key: str, trade_id: str | None) -> uuid.UUID:
    if key not in container:
        raise InvalidTrade(f"field '{key}'", "is missing", trade_id)
    return _as_uuid(container[key], key, trade_id)


def _as_uuid(value: object, field: str, trade_id: str | None) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise InvalidTrade(
            f"field '{field}'", f"must be a uuid string, not {type(value).__name__}", trade_id
        )
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidTrade(f"field '{field}'", f"is not a uuid: {value!r}", trade_id) from None


def _party(trade: Mapping[str, Any], role: str, trade_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    """(uuid in this market, origin uuid) of the seller or buyer."""
    details = trade.get(role)
    if not isinstance(details, Mapping):
        problem = "is missing" if details is None else "must be an object with uuid and origin_uuid"
        raise InvalidTrade(f"field '{role}'", problem, trade_id)
    for key in ("uuid", "origin_uuid"):
        if key not in details:
            raise InvalidTrade(f"field '{role}.{key}'", "is missing", trade_id)
    party = _as_uuid(details["uuid"], f"{role}.uuid", trade_id)
    origin = details["origin_uuid"]
    if origin is None:
        return party, party
    return party, _as_uuid(origin, f"{role}.origin_uuid", trade_id)


def _amount(
    trade: Mapping[str, Any],
    key: str,
    decimals: int,
    trade_id: str,
    *,
    positive: bool,
    null_is_zero: bool = False,
) -> int:
    """A scaled amount; energy must be positive, money may be zero, nothing negative."""
    field = f"field '{key}'"
    if key not in trade:
        raise InvalidTrade(field, "is missing", trade_id)
    value = trade[key]
    if value is None and null_is_zero:
        return 0
    if isinstance(value, bool) or not isinstance(value, float | int | Decimal):
        raise InvalidTrade(field, f"must be a number, not {type(value).__name__}", trade_id)
    try:
        scaled = to_fixed(value, decimals)
    except ValueError:
        raise InvalidTrade(field, f"must be a finite number, not {value!r}", trade_id) from None
    if value < 0:
        raise InvalidTrade(field, f"must not be negative, not {value!r}", trade_id)
    if positive and scaled == 0:
        raise InvalidTrade(field, f"must be at least 1e-{decimals}, not {value!r}", trade_id)
    if scaled > MAX_AMOUNT:
        limit = from_fixed(MAX_AMOUNT, decimals)
        raise InvalidTrade(field, f"must be at most {limit:.6g}, not {value!r}", trade_id)
    return scaled


def _time_slot(trade: Mapping[str, Any], given: str | datetime | None, trade_id: str) -> int:
    """The trade's slot in unix seconds, checked against the slot gsy-e's hook was given."""
    own = _slot_seconds(trade.get("time_slot"), "time_slot", trade_id)
    hook = _slot_seconds(given, "event time_slot", trade_id)
    slot = own if own is not None else hook
    if slot is None:
        raise InvalidTrade("field 'time_slot'", "is missing", trade_id)
    if own is not None and hook is not None and own != hook:
        raise InvalidTrade(
            "field 'time_slot'",
            f"({format_time_slot(own)}) differs from the event's ({format_time_slot(hook)})",
            trade_id,
        )
    if not 0 <= slot <= MAX_TIME_SLOT:
        raise InvalidTrade("field 'time_slot'", "is outside the contract's range", trade_id)
    return slot


def _slot_seconds(value: object, field: str, trade_id: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str):
        raise InvalidTrade(
            f"field '{field}'", f"must be an ISO time, not {type(value).__name__}", trade_id
        )
    try:
        return parse_time_slot(value)
    except ValueError as error:
        raise InvalidTrade(
            f"field '{field}'", f"is not a usable time ({error})", trade_id
        ) from None


# --- reference bills ---------------------------------------------------------------------


def compute_bills(records: Iterable[TradeRecord]) -> dict[uuid.UUID, Bill]:
    """Each participant's bill after these trades, as the contract keeps it.

    The buyer owes the seller the trade's price; the fee is not billed. A trade id seen
    before is skipped, exactly like the contract does.
    """
    totals: dict[uuid.UUID, list[int]] = {}
    seen: set[uuid.UUID] = set()
    for record in records:
        if record.trade_id in seen:
            continue
        seen.add(record.trade_id)
        seller = totals.setdefault(record.seller, [0, 0, 0, 0])
        buyer = totals.setdefault(record.buyer, [0, 0, 0, 0])
        seller[0] += record.energy
        seller[2] += record.price
        buyer[1] += record.energy
        buyer[3] += record.price
    return {participant: Bill(*values) for participant, values in totals.items()}


# --- decoding TradeSettled logs ----------------------------------------------------------


def decode_trade_settled(log: Mapping[str, Any]) -> TradeRecord:
    """The record a ``TradeSettled`` log carries (a log from a receipt or ``eth_getLogs``)."""
    if event_of(log) is not TRADE_SETTLED:
        raise InvalidLog("The log is not a TradeSettled event (wrong topics).")
    values = decode_as(TRADE_SETTLED, log).values
    try:
        return TradeRecord(
            trade_id=bytes32_to_uuid(values["trade_id"]),
            market=bytes32_to_uuid(values["market"]),
            time_slot=values["time_slot"],
            seller=bytes32_to_uuid(values["seller"]),
            buyer=bytes32_to_uuid(values["buyer"]),
            seller_origin=bytes32_to_uuid(values["seller_origin"]),
            buyer_origin=bytes32_to_uuid(values["buyer_origin"]),
            energy=values["energy"],
            price=values["price"],
            fee=values["fee"],
        )
    except TradeFormatError as error:
        raise undecodable(TRADE_SETTLED.name, log, error) from None


def decode_trade_settled_logs(logs: Sequence[Mapping[str, Any]]) -> list[TradeRecord]:
    """The TradeSettled records among ``logs`` (other events are left out), in order."""
    return [decode_trade_settled(log) for log in logs if event_of(log) is TRADE_SETTLED]
