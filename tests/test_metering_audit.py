"""The balancing recomputed from hand-built events, without a chain: a faithful sequence gives
no finding, and each altered event gives the finding that names it."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from pilotchain.metering import OPERATOR, WH, Rates, SlotStatus, balancing_totals
from pilotchain.metering_audit import (
    BoundaryTradeAfterClose,
    Event,
    MeterDeactivated,
    MeterRegistered,
    PeriodClosed,
    RatesSet,
    ReadingRecorded,
    SlotBalanced,
    SlotUnmetered,
    Statement,
    StatementPaid,
    recompute,
)
from pilotchain.trades import TradeRecord, format_time_slot, uuid_to_bytes32

CT = 10**18
SLOT = 900
S0 = 1_782_000_000
HOUSE, MARKET, OTHER = (uuid.UUID(int=n) for n in (0xA11CE, 0x3A2E7, 0xB0B))
METER = bytes(16) + uuid.UUID(int=0x3E7E2).bytes
EARLY = uuid.UUID(int=1)  # a trade recorded before the meter: it never counts
LATE = uuid.UUID(int=9)  # a trade recorded after its slot was closed


def trade(number: int, slot: int, energy: int, *, selling: bool, market: uuid.UUID = MARKET,
          trade_id: uuid.UUID | None = None) -> TradeRecord:
    seller, buyer = (HOUSE, OTHER) if selling else (OTHER, HOUSE)
    return TradeRecord(trade_id or uuid.UUID(int=number), market, slot, seller, buyer, seller,
                       buyer, energy, energy * 25, 0)


def faithful() -> list[Event]:
    """Slot S0: 10 Wh sold, 7 Wh exported (shortfall 3 Wh); slot S0+SLOT: 6 Wh bought, 9
    imported (excess 3 Wh) and 2 Wh exported unsold (surplus); slot S0+2·SLOT: no reading
    at its end (unmetered); a trade of S0 after it closed; one closed period."""
    s1, s2 = S0 + SLOT, S0 + 2 * SLOT
    return [
        RatesSet(Rates(S0, 40 * CT, 30 * CT, 8 * CT)),
        trade(0, S0, 5 * WH, selling=True, trade_id=EARLY),
        MeterRegistered(METER, HOUSE, "0x" + "11" * 20, HOUSE, 0),
        trade(2, S0, 10 * WH, selling=True),
        trade(3, S0, 4 * WH, selling=False, market=HOUSE),  # inside the house: no meter
        trade(4, s1, 6 * WH, selling=False),
        trade(4, s1, 6 * WH, selling=False),  # the same id again adds nothing
        ReadingRecorded(METER, S0, 1000, 500),
        ReadingRecorded(METER, s1, 1000, 507),
        ReadingRecorded(METER, s2, 1009, 509),
        SlotBalanced(HOUSE, S0, METER, 0, 7 * WH, 10 * WH, 0, 3 * WH * 40, 0, 0),
        SlotBalanced(HOUSE, s1, METER, 9 * WH, 2 * WH, 0, 6 * WH, 0, 3 * WH * 30, 2 * WH * 8),
        SlotUnmetered(HOUSE, s2, 0, 0),
        BoundaryTradeAfterClose(LATE, HOUSE, S0),
        trade(0, S0, 2 * WH, selling=False, trade_id=LATE),
        PeriodClosed(1, S0 + 3 * SLOT),
        StatementPaid(1, uuid_to_bytes32(HOUSE)),
    ]


def test_a_faithful_sequence_recomputes_without_a_finding() -> None:
    replay = recompute(faithful())
    assert replay.findings == []
    assert (len(replay.meters), replay.readings, replay.slots_balanced,
            replay.slots_unmetered) == (1, 3, 2, 1)
    assert [b.status for b in replay.balances] == [SlotStatus.BALANCED, SlotStatus.BALANCED,
                                                   SlotStatus.UNMETERED]
    shortfall, excess, _ = replay.balances
    assert (shortfall.shortfall, shortfall.unused) == (3 * WH, 0)
    assert (excess.excess, excess.surplus) == (3 * WH, 2 * WH)
    per_participant, operator = balancing_totals(replay.balances)
    charges, credits = 3 * WH * 40 + 3 * WH * 30, 2 * WH * 8
    assert (per_participant[HOUSE].charges, per_participant[HOUSE].credits) == (charges, credits)
    assert (operator.charges, operator.credits) == (credits, charges)
    # Every trade (the early, the in-house and the late one too) is on the bill.
    sold, bought = 15 * WH, 12 * WH
    assert replay.statement(1, uuid_to_bytes32(HOUSE)) == Statement(
        sold, bought, sold * 25, bought * 25, charges, credits,
        sold * 25 + credits - bought * 25 - charges, paid=True)
    assert replay.statement(1, OPERATOR) == Statement(
        0, 0, 0, 0, credits, charges, charges - credits, paid=False)


def altered(index: int, **changes: object) -> list[Event]:
    events = faithful()
    events[index] = replace(events[index], **changes)  # type: ignore[type-var]
    return events


def inserted(index: int, event: Event) -> list[Event]:
    events = faithful()
    events.insert(index, event)
    return events


def slot(offset: int) -> str:
    return f"slot {format_time_slot(S0 + offset * SLOT)} UTC"


@pytest.mark.parametrize(("events", "kind", "words"), [
    (altered(10, shortfall_charge=3 * WH * 40 + 1), "slot balance",
     [str(HOUSE), slot(0), f"shortfall charge {3 * WH * 40}", f"says {3 * WH * 40 + 1}"]),
    (altered(11, surplus_credit=0), "slot balance",
     [slot(1), f"surplus credit {2 * WH * 8}", "SlotBalanced says 0"]),
    (altered(10, sold=15 * WH), "slot balance",  # as if the early trade had counted
     [slot(0), f"sold {10 * WH}", f"says {15 * WH}"]),
    (altered(11, import_energy=10 * WH), "slot balance",
     [slot(1), f"import energy {9 * WH}", f"says {10 * WH}"]),
    (altered(10, meter=bytes(32)), "slot balance", [slot(0), f"meter 0x{METER.hex()}"]),
    (altered(12, sold=1), "slot balance", [slot(2), "sold 0, SlotUnmetered says 1"]),
    # The unmetered slot's end reading, stored before it closed: it balances.
    (inserted(10, ReadingRecorded(METER, S0 + 3 * SLOT, 1009, 509)), "slot status",
     [slot(2), "balanced (readings at both ends: yes)", "logged SlotUnmetered"]),
    (faithful()[:13] + faithful()[14:], "after close",
     [str(LATE), str(HOUSE), slot(0), "no BoundaryTradeAfterClose says so"]),
    (inserted(10, ReadingRecorded(METER, S0 + 5 * SLOT, 1008, 509)), "reading",
     ["registers 1008/509 Wh below the previous 1009/509 Wh"]),
    (inserted(11, faithful()[10]), "slot close", [slot(0), "was already closed"]),
], ids=["charge", "credit", "sold", "import", "meter", "unmetered", "status", "after close",
        "backwards", "closed twice"])
def test_one_altered_event_is_named(events: list[Event], kind: str, words: list[str]) -> None:
    findings = recompute(events).findings
    assert [finding.kind for finding in findings] == [kind], findings
    assert all(word in findings[0].detail for word in words), findings[0].detail


def test_a_trade_before_the_meter_counts_in_no_market() -> None:
    assert recompute(altered(1, market=HOUSE)).findings == []
    assert recompute(altered(1, market=OTHER)).findings == []


@pytest.mark.parametrize(("events", "words"), [
    (inserted(10, MeterDeactivated(METER, HOUSE, S0)),
     [f"0x{METER.hex()}", "before its newest reading"]),
    (inserted(3, MeterRegistered(bytes(31) + b"\x01", HOUSE, "0x" + "22" * 20, HOUSE, 0)),
     [str(HOUSE), "still active"]),
], ids=["ended early", "two active"])
def test_a_registry_change_the_contract_refuses_is_named_first(
        events: list[Event], words: list[str]) -> None:
    """The slots it leaves unmetered are named after it."""
    findings = recompute(events).findings
    assert findings[0].kind == "meter", findings
    assert all(word in findings[0].detail for word in words), findings[0].detail
    assert {finding.kind for finding in findings[1:]} <= {"slot status", "slot balance"}
