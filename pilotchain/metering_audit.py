"""The balancing and the statements recomputed from the Settlement contract's events alone.

Pure, like :mod:`pilotchain.metering` (no web3 I/O): ``pilotchain audit`` (chain reading in
:mod:`pilotchain.audit`) decodes the contract's logs with :func:`decode_metering_log` and
feeds them, with the ``TradeSettled`` records, to a :class:`BalancingReplay` in log order
(block, log index). The replay keeps only what the events say: the meter registry (home
areas, active periods), the rates history, each metered participant's boundary energy per
slot, the stored readings, which slots are closed, and every bill as it changes. At each
``SlotBalanced`` or ``SlotUnmetered`` it balances the slot with
:func:`pilotchain.metering.balance_slot` from the state at that point, as the contract saw it
when it closed the slot, and names every field the event reports differently. The contract's
arithmetic is never trusted: a balance is recomputed from trades, registers and rates, and the
event only compared with it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pilotchain.errors import TradeFormatError
from pilotchain.events import (
    BOUNDARY_TRADE_AFTER_CLOSE,
    METER_DEACTIVATED,
    METER_REGISTERED,
    PERIOD_CLOSED,
    RATES_SET,
    READING_RECORDED,
    SLOT_BALANCED,
    SLOT_SECONDS_SET,
    SLOT_UNMETERED,
    STATEMENT_PAID,
    decode_as,
    event_of,
    undecodable,
)
from pilotchain.metering import (
    DEFAULT_SLOT_SECONDS,
    MAX_REGISTER,
    OPERATOR,
    Rates,
    SlotBalance,
    SlotStatus,
    balance_slot,
    rates_at,
)
from pilotchain.trades import (
    TradeRecord,
    bytes32_to_uuid,
    format_time_slot,
    uuid_to_bytes32,
)

# A meter without an end (the contract's type(uint64).max).
ACTIVE = MAX_REGISTER


@dataclass(frozen=True)
class Finding:
    """One difference between the events and the contract's state."""

    kind: str
    detail: str


# --- decoded events -------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterRegistered:
    meter: bytes
    participant: uuid.UUID
    signer: str
    home_area: uuid.UUID
    active_from: int


@dataclass(frozen=True)
class MeterDeactivated:
    meter: bytes
    participant: uuid.UUID
    active_until: int


@dataclass(frozen=True)
class ReadingRecorded:
    meter: bytes
    time: int
    import_wh: int
    export_wh: int


@dataclass(frozen=True)
class RatesSet:
    rates: Rates


@dataclass(frozen=True)
class SlotSecondsSet:
    seconds: int


@dataclass(frozen=True)
class BoundaryTradeAfterClose:
    trade_id: uuid.UUID
    participant: uuid.UUID
    slot: int


@dataclass(frozen=True)
class SlotBalanced:
    """What a ``SlotBalanced`` event reports (energies kWh * 10**18, money cents * 10**18)."""

    participant: uuid.UUID
    slot: int
    meter: bytes
    import_energy: int
    export_energy: int
    sold: int
    bought: int
    shortfall_charge: int
    excess_charge: int
    surplus_credit: int


@dataclass(frozen=True)
class SlotUnmetered:
    participant: uuid.UUID
    slot: int
    sold: int
    bought: int


@dataclass(frozen=True)
class PeriodClosed:
    period: int
    end_slot: int


@dataclass(frozen=True)
class StatementPaid:
    period: int
    party: bytes


Event = (TradeRecord | MeterRegistered | MeterDeactivated | ReadingRecorded | RatesSet
         | SlotSecondsSet | BoundaryTradeAfterClose | SlotBalanced | SlotUnmetered
         | PeriodClosed | StatementPaid)


def decode_metering_log(log: Mapping[str, Any]) -> Event | None:
    """The metering or period event a Settlement log carries; None for any other log."""
    event = event_of(log)
    build = _BUILDERS.get(event.name) if event is not None else None
    if event is None or build is None:
        return None
    values = decode_as(event, log).values
    try:
        return build(values)
    except TradeFormatError as error:
        raise undecodable(event.name, log, error) from None


def _meter_registered(v: dict[str, Any]) -> Event:
    return MeterRegistered(v["meter"], bytes32_to_uuid(v["participant"]), v["signer"],
                           bytes32_to_uuid(v["home_area"]), v["active_from"])


def _meter_deactivated(v: dict[str, Any]) -> Event:
    return MeterDeactivated(v["meter"], bytes32_to_uuid(v["participant"]), v["active_until"])


def _reading_recorded(v: dict[str, Any]) -> Event:
    return ReadingRecorded(v["meter"], v["time"], v["import_wh"], v["export_wh"])


def _rates_set(v: dict[str, Any]) -> Event:
    return RatesSet(Rates(v["from_slot"], v["shortfall_rate"], v["grid_supply_rate"],
                          v["feed_in_rate"]))


def _after_close(v: dict[str, Any]) -> Event:
    return BoundaryTradeAfterClose(bytes32_to_uuid(v["trade_id"]),
                                   bytes32_to_uuid(v["participant"]), v["slot"])


def _slot_balanced(v: dict[str, Any]) -> Event:
    return SlotBalanced(bytes32_to_uuid(v["participant"]), v["slot"], v["meter"],
                        v["import_energy"], v["export_energy"], v["sold"], v["bought"],
                        v["shortfall_charge"], v["excess_charge"], v["surplus_credit"])


def _slot_unmetered(v: dict[str, Any]) -> Event:
    return SlotUnmetered(bytes32_to_uuid(v["participant"]), v["slot"], v["sold"], v["bought"])


_BUILDERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    METER_REGISTERED.name: _meter_registered,
    METER_DEACTIVATED.name: _meter_deactivated,
    READING_RECORDED.name: _reading_recorded,
    RATES_SET.name: _rates_set,
    SLOT_SECONDS_SET.name: lambda v: SlotSecondsSet(v["slot_seconds"]),
    BOUNDARY_TRADE_AFTER_CLOSE.name: _after_close,
    SLOT_BALANCED.name: _slot_balanced,
    SLOT_UNMETERED.name: _slot_unmetered,
    PERIOD_CLOSED.name: lambda v: PeriodClosed(v["period"], v["end_slot"]),
    STATEMENT_PAID.name: lambda v: StatementPaid(v["period"], v["participant"]),
}


# --- bills and statements -------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """A party's statement of one closed period, in the order of ``statementOf``'s fields."""

    energy_sold: int = 0
    energy_bought: int = 0
    money_receivable: int = 0
    money_payable: int = 0
    balancing_charges: int = 0
    balancing_credits: int = 0
    net: int = 0
    paid: bool = False


# A party's six running amounts, in Statement's order (net and paid derive from them).
_Amounts = tuple[int, int, int, int, int, int]
_ZERO: _Amounts = (0, 0, 0, 0, 0, 0)


# --- the replay -----------------------------------------------------------------------------


@dataclass
class _Meter:
    participant: uuid.UUID
    active_from: int
    active_until: int = ACTIVE
    last: tuple[int, int, int] | None = None  # time, import Wh, export Wh of the newest reading


_COMPARED = ("sold", "bought", "import_energy", "export_energy", "shortfall_charge",
             "excess_charge", "surplus_credit")


@dataclass
class BalancingReplay:
    """The contract's metering and bills, replayed from its events in log order.

    ``apply`` each event, then ``finish``; ``findings`` holds every difference between what
    an event reports and what the events before it imply, ``balances`` every closed slot as
    recomputed.
    """

    slot_seconds: int = DEFAULT_SLOT_SECONDS
    meters: dict[bytes, _Meter] = field(default_factory=dict)
    meters_of: dict[uuid.UUID, list[bytes]] = field(default_factory=dict)
    home_areas: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    registers: dict[bytes, dict[int, tuple[int, int]]] = field(default_factory=dict)
    rates: list[Rates] = field(default_factory=list)
    open_slots: dict[tuple[uuid.UUID, int], tuple[int, int]] = field(default_factory=dict)
    closed: dict[tuple[uuid.UUID, int], SlotStatus] = field(default_factory=dict)
    balances: list[SlotBalance] = field(default_factory=list)
    readings: int = 0
    slots_balanced: int = 0
    slots_unmetered: int = 0
    bills: dict[bytes, _Amounts] = field(default_factory=dict)
    period_bills: list[dict[bytes, _Amounts]] = field(default_factory=list)
    paid: set[tuple[int, bytes]] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)
    _seen: set[uuid.UUID] = field(default_factory=set)
    _after_close_expected: Counter[tuple[uuid.UUID, uuid.UUID, int]] = field(
        default_factory=Counter)
    _after_close_logged: Counter[tuple[uuid.UUID, uuid.UUID, int]] = field(
        default_factory=Counter)

    def apply(self, event: Event) -> None:
        """Takes the next event in log order."""
        match event:
            case TradeRecord():
                self._trade(event)
            case MeterRegistered():
                self._register(event)
            case MeterDeactivated():
                self._deactivate(event)
            case ReadingRecorded():
                self._reading(event)
            case RatesSet():
                self.rates.append(event.rates)
            case SlotSecondsSet():
                self.slot_seconds = event.seconds
            case BoundaryTradeAfterClose():
                self._after_close_logged[(event.trade_id, event.participant, event.slot)] += 1
            case SlotBalanced() | SlotUnmetered():
                self._close(event)
            case PeriodClosed():
                self.period_bills.append(dict(self.bills))
            case StatementPaid():
                self.paid.add((event.period, event.party))

    def finish(self) -> BalancingReplay:
        """Compares the trades that came after their slot closed with the events saying so."""
        expected, logged = self._after_close_expected, self._after_close_logged
        for trade, participant, slot in sorted(expected - logged, key=str):
            self._find("after close", f"Trade {trade} of participant {participant} came after "
                       f"its slot {_slot(slot)} was closed, but no BoundaryTradeAfterClose "
                       "says so.")
        for trade, participant, slot in sorted(logged - expected, key=str):
            self._find("after close", f"A BoundaryTradeAfterClose names trade {trade} of "
                       f"participant {participant}, slot {_slot(slot)}, but the events show no "
                       "such trade after that slot was closed.")
        return self

    # --- the rules, mirrored -------------------------------------------------------------

    def _trade(self, record: TradeRecord) -> None:
        if record.trade_id in self._seen:
            return  # a duplicate is its own finding of the trade audit; it counts once
        self._seen.add(record.trade_id)
        for party, selling in ((record.seller, True), (record.buyer, False)):
            energy, price = record.energy, record.price
            self._bill(uuid_to_bytes32(party), (energy, 0, price, 0, 0, 0) if selling
                       else (0, energy, 0, price, 0, 0))
            home = self.home_areas.get(party)
            if home is None or record.market == home:
                continue
            key = (party, record.time_slot)
            if key in self.closed:
                self._after_close_expected[(record.trade_id, party, record.time_slot)] += 1
                continue
            sold, bought = self.open_slots.get(key, (0, 0))
            self.open_slots[key] = ((sold + record.energy, bought) if selling
                                    else (sold, bought + record.energy))

    def _register(self, event: MeterRegistered) -> None:
        """A participant's next meter starts where its previous one ended (the first at 0)."""
        where = f"Meter 0x{event.meter.hex()} of participant {event.participant}"
        history = self.meters_of.get(event.participant, [])
        start = self.meters[history[-1]].active_until if history else 0
        if event.meter in self.meters:
            self._find("meter", f"{where}: registered again.")
        elif start == ACTIVE:
            self._find("meter", f"{where}: registered while meter 0x{history[-1].hex()} is "
                       "still active.")
        elif event.active_from != start:
            self._find("meter", f"{where}: active from {event.active_from}, but the previous "
                       f"meter ended at {start}.")
        self.meters[event.meter] = _Meter(event.participant, event.active_from)
        self.meters_of.setdefault(event.participant, []).append(event.meter)
        self.home_areas[event.participant] = event.home_area

    def _deactivate(self, event: MeterDeactivated) -> None:
        meter = self.meters.get(event.meter)
        where = f"Meter 0x{event.meter.hex()} of participant {event.participant}"
        if meter is None or meter.participant != event.participant:
            self._find("meter", f"{where}: deactivated, but no such meter was registered.")
            return
        if meter.active_until != ACTIVE:
            self._find("meter", f"{where}: deactivated again.")
        if meter.last is not None and event.active_until < meter.last[0]:
            self._find("meter", f"{where}: ended at {_slot(event.active_until)}, before its "
                       f"newest reading at {_slot(meter.last[0])}.")
        meter.active_until = event.active_until

    def _reading(self, event: ReadingRecorded) -> None:
        """Stores the registers; a reading the contract's rules refuse is a finding."""
        self.readings += 1
        meter = self.meters.get(event.meter)
        where = f"Meter 0x{event.meter.hex()}, reading at {_slot(event.time)}"
        if meter is None:
            self._find("reading", f"{where}: the meter was never registered.")
            return
        if event.time % self.slot_seconds:
            self._find("reading", f"{where}: not on a slot boundary of {self.slot_seconds} s.")
        if not meter.active_from <= event.time <= meter.active_until:
            self._find("reading", f"{where}: outside the meter's active period.")
        if meter.last is not None:
            time, import_wh, export_wh = meter.last
            if event.time <= time:
                self._find("reading", f"{where}: not after its previous reading at "
                           f"{_slot(time)}.")
            if event.import_wh < import_wh or event.export_wh < export_wh:
                self._find("reading", f"{where}: registers {event.import_wh}/{event.export_wh} "
                           f"Wh below the previous {import_wh}/{export_wh} Wh.")
        meter.last = (event.time, event.import_wh, event.export_wh)
        self.registers.setdefault(event.meter, {})[event.time] = (event.import_wh,
                                                                  event.export_wh)

    def _close(self, event: SlotBalanced | SlotUnmetered) -> None:
        """Balances the slot from the state so far and compares the event with it."""
        balanced = isinstance(event, SlotBalanced)
        self.slots_balanced += balanced
        self.slots_unmetered += not balanced
        participant, slot = event.participant, event.slot
        where = f"Participant {participant}, slot {_slot(slot)}"
        key = (participant, slot)
        if participant not in self.home_areas or slot % self.slot_seconds or key in self.closed:
            reason = ("has no meter" if participant not in self.home_areas else
                      "is not on a slot boundary" if slot % self.slot_seconds else
                      "was already closed")
            self._find("slot close", f"{where}: {type(event).__name__} although the slot "
                       f"{reason}; the contract closes no such slot.")
            return
        sold, bought = self.open_slots.pop(key, (0, 0))
        meter, start, end = self._measured(participant, slot)
        expected = balance_slot(participant, slot, sold, bought, start, end,
                                rates_at(self.rates, slot))
        self.closed[key] = expected.status
        self.balances.append(expected)
        if balanced != (expected.status == SlotStatus.BALANCED):
            self._find("slot status", f"{where}: the events give "
                       f"{expected.status.name.lower()} (readings at both ends: "
                       f"{'yes' if start and end else 'no'}), the contract logged "
                       f"{type(event).__name__}.")
        names = _COMPARED if balanced else ("sold", "bought")
        for name in names:
            ours, theirs = getattr(expected, name), getattr(event, name)
            if ours != theirs:
                self._find("slot balance", f"{where}: the events give "
                           f"{name.replace('_', ' ')} {ours}, {type(event).__name__} says "
                           f"{theirs}.")
        if isinstance(event, SlotBalanced) and meter is not None and event.meter != meter:
            self._find("slot balance", f"{where}: the events give meter 0x{meter.hex()}, "
                       f"SlotBalanced says 0x{event.meter.hex()}.")
        if expected.charges or expected.surplus_credit:
            charges, credit = expected.charges, expected.surplus_credit
            self._bill(uuid_to_bytes32(participant), (0, 0, 0, 0, charges, credit))
            self._bill(OPERATOR, (0, 0, 0, 0, credit, charges))

    def _measured(self, participant: uuid.UUID, slot: int
                  ) -> tuple[bytes | None, tuple[int, int] | None, tuple[int, int] | None]:
        """The meter active over the whole slot (newest first) and its registers at the
        slot's ends, as far as stored so far."""
        end = slot + self.slot_seconds
        for meter_id in reversed(self.meters_of.get(participant, [])):
            meter = self.meters[meter_id]
            if meter.active_from <= slot and end <= meter.active_until:
                stored = self.registers.get(meter_id, {})
                return meter_id, stored.get(slot), stored.get(end)
            if meter.active_until <= slot:
                break
        return None, None, None

    def _bill(self, party: bytes, change: _Amounts) -> None:
        a, b = self.bills.get(party, _ZERO), change
        self.bills[party] = (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4],
                             a[5] + b[5])

    def _find(self, kind: str, detail: str) -> None:
        self.findings.append(Finding(kind, detail))

    # --- what the contract's state must be -----------------------------------------------

    def metered(self) -> list[uuid.UUID]:
        """Every participant that has had a meter, in a stable order."""
        return sorted(self.home_areas, key=str)

    def statement(self, period: int, party: bytes) -> Statement:
        """What ``statementOf(period, party)`` must answer for a closed period (from 1)."""
        at_end = self.period_bills[period - 1].get(party, _ZERO)
        at_start = self.period_bills[period - 2].get(party, _ZERO) if period > 1 else _ZERO
        sold, bought, receivable, payable, charges, credits = (
            end - start for end, start in zip(at_end, at_start, strict=True))
        return Statement(sold, bought, receivable, payable, charges, credits,
                         net=receivable + credits - payable - charges,
                         paid=(period, party) in self.paid)


def recompute(events: Iterable[Event]) -> BalancingReplay:
    """Replays ``events`` (decoded, in log order) and returns the finished replay."""
    replay = BalancingReplay()
    for event in events:
        replay.apply(event)
    return replay.finish()


def _slot(unix_seconds: int) -> str:
    return f"{format_time_slot(unix_seconds)} UTC"
