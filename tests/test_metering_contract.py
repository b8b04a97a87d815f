"""Metering and balancing of the Settlement contract on an in-process London EVM (eth-tester).

Every rule is checked against the contract itself; charges are compared with
``pilotchain.metering``'s reference, which computes them independently in Python.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from evm_fixtures import Evm, deploy_evm, events, revert_of, send
from recordings import RECORDINGS
from web3 import Web3

from bridge.gas import WORST_GAS_PER_TRADE
from pilotchain.contract import (
    MAX_CODE_BYTES,
    CompiledContract,
)
from pilotchain.metering import (
    OPERATOR,
    READING_TYPEHASH,
    WH,
    Domain,
    MeterReading,
    Rates,
    Refusal,
    SignedReading,
    SlotBalance,
    SlotStatus,
    balancing_totals,
    boundary_energy,
    compute_balancing,
    matching_registers,
    meter_id,
    minutes_anchor,
    sign_reading,
)
from pilotchain.trades import Bill, TradeRecord, compute_bills, uuid_to_bytes32
from worker.gas import BATCH_OVERHEAD_GAS, TRANSACTION_GAS, calldata_gas

READER_ROLE = Web3.keccak(text="READER_ROLE")
ADMIN_ROLE = bytes(32)
SLOT = 900
# A slot of the recordings' day (2026-06-21 00:00 UTC), long past for the chain's clock.
DAY = 1_782_000_000 - 1_782_000_000 % 86_400
CT = 10**18  # one euro cent per kWh, scaled


@pytest.fixture(scope="module")
def evm(compiled: CompiledContract) -> Evm:
    return deploy_evm(compiled, seed=8, grant_reader=True)


# --- helpers --------------------------------------------------------------------------------


def admin(evm: Evm, function: Any) -> Any:
    return send(evm, function, evm.operator.address)


def now(evm: Evm) -> int:
    timestamp: int = evm.w3.eth.get_block("latest")["timestamp"]
    return timestamp


def record(evm: Evm, records: Sequence[TradeRecord]) -> Any:
    receipt = None
    for start in range(0, len(records), 64):
        batch = [r.as_contract_tuple() for r in records[start : start + 64]]
        receipt = send(evm, evm.contract.functions.recordTrades(batch), evm.recorder.address)
    return receipt


def submit(evm: Evm, readings: Sequence[SignedReading]) -> Any:
    call = evm.contract.functions.submitReadings([r.as_contract_tuple() for r in readings])
    return send(evm, call, evm.reader.address)


def refused(evm: Evm, receipt: Any) -> list[tuple[int, Refusal]]:
    return [(e["index"], Refusal(e["reason"])) for e in events(evm, receipt, "ReadingRefused")]


def close(evm: Evm, pairs: Sequence[tuple[uuid.UUID, int]]) -> Any:
    receipt = None
    for start in range(0, len(pairs), 100):
        part = pairs[start : start + 100]
        call = evm.contract.functions.closeSlots(
            [uuid_to_bytes32(p) for p, _ in part], [slot for _, slot in part]
        )
        receipt = send(evm, call, evm.outsider)
    return receipt


@dataclass
class House:
    """A metered participant with its meter and the meter's key."""

    participant: uuid.UUID
    meter: bytes
    key: LocalAccount

    @property
    def pid(self) -> bytes:
        return uuid_to_bytes32(self.participant)

    def reading(self, evm: Evm, time: int, imp: int, exp: int,
                anchor: bytes = bytes(32), key: LocalAccount | None = None,
                domain: Domain | None = None) -> SignedReading:
        return sign_reading(MeterReading(self.meter, time, imp, exp, anchor),
                            key or self.key, domain or evm.domain)


def house(seed: int, participant: uuid.UUID | None = None) -> House:
    rng = random.Random(seed)
    return House(participant or uuid.UUID(int=rng.getrandbits(128)),
                 meter_id(uuid.UUID(int=rng.getrandbits(128))), Account.from_key(rng.randbytes(32)))


def register(evm: Evm, h: House, home: uuid.UUID | None = None) -> Any:
    area = uuid_to_bytes32(home or h.participant)
    return admin(evm, evm.contract.functions.registerMeter(h.meter, h.key.address, h.pid, area))


def trade(seller: uuid.UUID, buyer: uuid.UUID, market: uuid.UUID, slot: int,
          energy: int, price: int = 10**18) -> TradeRecord:
    return TradeRecord(uuid.uuid4(), market, slot, seller, buyer, seller, buyer, energy, price, 0)


# --- format, size, roles ----------------------------------------------------------------------


def test_runtime_code_fits_eip170(compiled: CompiledContract):
    size = len(bytes.fromhex(compiled.runtime_bytecode.removeprefix("0x")))
    assert size <= MAX_CODE_BYTES, f"Settlement runtime code is {size} bytes"


def test_domain_type_and_digest_agree_with_python(evm: Evm):
    functions = evm.contract.functions
    assert functions.domainSeparator().call() == evm.domain.separator()
    assert functions.READING_TYPEHASH().call() == READING_TYPEHASH
    assert functions.OPERATOR().call() == OPERATOR
    assert functions.WH().call() == WH
    reading = MeterReading(meter_id(uuid.uuid4()), DAY, 123_456, 789, b"\x42" * 32)
    on_chain = functions.readingDigest(reading.meter, reading.time, reading.import_wh,
                                       reading.export_wh, reading.minutes_anchor).call()
    assert on_chain == reading.digest(evm.domain)


def test_deployment_grants_the_reader_role(evm: Evm):
    functions = evm.contract.functions
    assert functions.hasRole(READER_ROLE, evm.reader.address).call() is True
    assert functions.hasRole(READER_ROLE, evm.recorder.address).call() is False
    assert functions.slotSeconds().call() == SLOT
    assert functions.closeDelay().call() == 3600


def test_only_the_admin_registers_meters_sets_rates_and_closes_periods(fresh: Evm):
    h = house(1)
    functions = fresh.contract.functions
    calls = [
        functions.registerMeter(h.meter, h.key.address, h.pid, h.pid),
        functions.deactivateMeter(h.meter, DAY),
        functions.replaceMeter(h.meter, h.meter, h.key.address, DAY),
        functions.setRates(DAY, 1, 1, 1),
        functions.setSlotSeconds(3600),
        functions.setCloseDelay(0),
        functions.closePeriod(DAY),
        functions.markPaid(1, h.pid),
    ]
    for call in calls:
        for sender in (fresh.outsider, fresh.recorder.address, fresh.reader.address):
            assert revert_of(fresh, call, sender) == (
                f"AccessControlUnauthorizedAccount(account={sender}, "
                f"neededRole=0x{ADMIN_ROLE.hex()})"
            )


def test_only_readers_submit_readings(fresh: Evm):
    h = house(2)
    register(fresh, h)
    reading = h.reading(fresh, DAY, 0, 0).as_contract_tuple()
    call = fresh.contract.functions.submitReadings([reading])
    for sender in (fresh.outsider, fresh.operator.address, fresh.recorder.address):
        assert revert_of(fresh, call, sender) == (
            f"AccessControlUnauthorizedAccount(account={sender}, neededRole=0x{READER_ROLE.hex()})"
        )
    assert revert_of(fresh, fresh.contract.functions.submitReadings([]),
                     fresh.reader.address) == "EmptyBatch()"


# --- registry ---------------------------------------------------------------------------------


def test_register_meter(fresh: Evm):
    h, area = house(3), uuid.uuid4()
    receipt = register(fresh, h, home=area)
    assert events(fresh, receipt, "MeterRegistered") == [{
        "meter": h.meter, "participant": h.pid, "signer": h.key.address,
        "homeArea": uuid_to_bytes32(area), "activeFrom": 0,
    }]
    functions = fresh.contract.functions
    assert functions.homeAreaOf(h.pid).call() == uuid_to_bytes32(area)
    assert functions.metersOf(h.pid).call() == [h.meter]
    meter = functions.meterOf(h.meter).call()
    signer, last_time, has_readings, participant, start, until, *_ = meter
    assert (signer, last_time, has_readings, participant) == (h.key.address, 0, False, h.pid)
    assert (start, until) == (0, 2**64 - 1)


def test_registry_refusals(fresh: Evm):
    h, other = house(4), house(5)
    register(fresh, h)
    functions = fresh.contract.functions
    operator = fresh.operator.address
    zero = "0x" + "00" * 20
    cases = [
        (functions.registerMeter(other.meter, other.key.address, bytes(32), other.pid),
         "ZeroParticipant()"),
        (functions.registerMeter(other.meter, other.key.address, other.pid, bytes(32)),
         "ZeroParticipant()"),
        (functions.registerMeter(bytes(32), other.key.address, other.pid, other.pid), "ZeroId()"),
        (functions.registerMeter(other.meter, zero, other.pid, other.pid), "ZeroAddress()"),
        (functions.registerMeter(h.meter, other.key.address, other.pid, other.pid),
         f"MeterAlreadyRegistered(meter=0x{h.meter.hex()})"),
        (functions.registerMeter(other.meter, other.key.address, h.pid, h.pid),
         f"MeterStillActive(participant=0x{h.pid.hex()}, meter=0x{h.meter.hex()})"),
        (functions.deactivateMeter(other.meter, DAY), f"UnknownMeter(meter=0x{other.meter.hex()})"),
        (functions.deactivateMeter(h.meter, DAY + 1), f"NotOnSlotBoundary(time={DAY + 1})"),
    ]
    for call, expected in cases:
        assert revert_of(fresh, call, operator) == expected


def test_replacing_a_meter_keeps_the_old_readings(fresh: Evm):
    old = house(6)
    new = dataclasses.replace(house(7), participant=old.participant)
    register(fresh, old)
    submit(fresh, [old.reading(fresh, DAY, 10, 0), old.reading(fresh, DAY + SLOT, 20, 0)])
    functions = fresh.contract.functions
    assert revert_of(fresh, functions.replaceMeter(old.meter, new.meter, new.key.address, DAY),
                     fresh.operator.address) == (
        f"MeterEndTooEarly(meter=0x{old.meter.hex()}, earliest={DAY + SLOT})"
    )
    at = DAY + 2 * SLOT
    receipt = admin(fresh, functions.replaceMeter(old.meter, new.meter, new.key.address, at))
    assert events(fresh, receipt, "MeterDeactivated") == [
        {"meter": old.meter, "participant": old.pid, "activeUntil": at}]
    assert events(fresh, receipt, "MeterRegistered")[0]["activeFrom"] == at
    assert functions.metersOf(old.pid).call() == [old.meter, new.meter]
    assert functions.readingOf(old.meter, DAY + SLOT).call() == [True, 20, 0, bytes(32)]

    # The old meter still reads up to the change, not after; the new one from it on.
    receipt = submit(fresh, [
        old.reading(fresh, at, 30, 0),
        old.reading(fresh, at + SLOT, 40, 0),
        new.reading(fresh, at, 0, 0),
        new.reading(fresh, at - SLOT, 0, 0),
        new.reading(fresh, at + SLOT, 5, 0),
    ])
    assert refused(fresh, receipt) == [(1, Refusal.METER_INACTIVE), (3, Refusal.OUT_OF_ORDER)]
    assert revert_of(fresh, functions.replaceMeter(old.meter, house(8).meter, new.key.address, at),
                     fresh.operator.address) == f"MeterNotActive(meter=0x{old.meter.hex()})"

    # A participant whose meter was deactivated gets its next one from where that ended.
    admin(fresh, functions.deactivateMeter(new.meter, at + SLOT))
    third = dataclasses.replace(house(9), participant=old.participant)
    receipt = register(fresh, third)
    assert events(fresh, receipt, "MeterRegistered")[0]["activeFrom"] == at + SLOT


def test_slot_length_is_fixed_by_the_first_meter(fresh: Evm):
    functions = fresh.contract.functions
    receipt = admin(fresh, functions.setSlotSeconds(3600))
    assert events(fresh, receipt, "SlotSecondsSet") == [{"slotSeconds": 3600}]
    assert revert_of(fresh, functions.setSlotSeconds(0), fresh.operator.address) == (
        "InvalidSlotLength()")
    admin(fresh, functions.setSlotSeconds(SLOT))
    register(fresh, house(10))
    assert revert_of(fresh, functions.setSlotSeconds(3600), fresh.operator.address) == (
        "SlotLengthFixed()")
    receipt = admin(fresh, functions.setCloseDelay(60))
    assert events(fresh, receipt, "CloseDelaySet") == [{"closeDelay": 60}]
    assert functions.closeDelay().call() == 60


# --- readings ---------------------------------------------------------------------------------


def test_readings_are_stored_once_and_retries_are_harmless(fresh: Evm):
    h = house(11)
    register(fresh, h)
    minutes = [MeterReading(h.meter, DAY + 60 * i, i, 0) for i in range(1, 15)]
    anchor = minutes_anchor(minutes, fresh.domain)
    batch = [h.reading(fresh, DAY, 0, 0), h.reading(fresh, DAY + SLOT, 15, 2, anchor)]
    receipt = submit(fresh, batch)
    assert events(fresh, receipt, "ReadingsSubmitted") == [
        {"recorded": 2, "duplicates": 0, "refused": 0}]
    assert events(fresh, receipt, "ReadingRecorded")[1] == {
        "meter": h.meter, "time": DAY + SLOT, "importWh": 15, "exportWh": 2,
        "minutesAnchor": anchor}
    functions = fresh.contract.functions
    assert functions.readingOf(h.meter, DAY + SLOT).call() == [True, 15, 2, anchor]
    assert functions.readingOf(h.meter, DAY + 2 * SLOT).call() == [False, 0, 0, bytes(32)]

    returned = functions.submitReadings([r.as_contract_tuple() for r in batch]).call(
        {"from": fresh.reader.address})
    assert returned == [0, 2]
    again = submit(fresh, batch)
    assert events(fresh, again, "ReadingsSubmitted") == [
        {"recorded": 0, "duplicates": 2, "refused": 0}]
    assert events(fresh, again, "ReadingRecorded") == []
    # The same reading with another (valid) signature is still the same reading.
    resigned = SignedReading(batch[0].reading, bytes(batch[0].signature))
    assert functions.checkReading(resigned.as_contract_tuple()).call() == Refusal.DUPLICATE


def test_every_bad_reading_is_refused_with_its_index_and_reason(fresh: Evm):
    h, other, stranger = house(12), house(13), house(14)
    register(fresh, h)
    register(fresh, other)
    submit(fresh, [h.reading(fresh, DAY, 100, 50), h.reading(fresh, DAY + SLOT, 110, 60)])
    last = DAY + SLOT
    wrong_chain = Domain(fresh.domain.chain_id + 1, fresh.contract.address)
    wrong_contract = Domain(fresh.domain.chain_id, "0x" + "ab" * 20)
    good = h.reading(fresh, last + SLOT, 120, 70)
    short = dataclasses.replace(h.reading(fresh, last + 2 * SLOT, 130, 80),
                                signature=good.signature[:64])
    malleable = _malleable(h.reading(fresh, last + 2 * SLOT, 130, 80))
    future = (now(fresh) // SLOT + 2) * SLOT
    batch = [
        h.reading(fresh, last + SLOT, 120, 70, key=other.key),          # another meter's key
        h.reading(fresh, last + SLOT, 120, 70, domain=wrong_chain),     # another evm id
        h.reading(fresh, last + SLOT, 120, 70, domain=wrong_contract),  # another contract
        stranger.reading(fresh, last + SLOT, 1, 1),                     # unregistered meter
        h.reading(fresh, last + SLOT + 60, 120, 70),                    # not on a boundary
        h.reading(fresh, future, 120, 70),                              # beyond now + 300 s
        h.reading(fresh, last, 111, 60),                                # differs from stored
        h.reading(fresh, last - 2 * SLOT, 90, 40),                      # before the newest
        h.reading(fresh, last + SLOT, 109, 70),                         # import went back
        h.reading(fresh, last + SLOT, 120, 59),                         # export went back
        short,                                                          # not 65 bytes
        malleable,                                                      # high-s twin
        good,
    ]
    expected = [
        (0, Refusal.BAD_SIGNATURE), (1, Refusal.BAD_SIGNATURE), (2, Refusal.BAD_SIGNATURE),
        (3, Refusal.UNKNOWN_METER), (4, Refusal.NOT_ON_SLOT_BOUNDARY), (5, Refusal.FUTURE_DATED),
        (6, Refusal.CONFLICTING), (7, Refusal.OUT_OF_ORDER), (8, Refusal.REGISTERS_BACKWARDS),
        (9, Refusal.REGISTERS_BACKWARDS), (10, Refusal.BAD_SIGNATURE),
        (11, Refusal.BAD_SIGNATURE),
    ]
    check = fresh.contract.functions.checkReading
    assert [(i, check(r.as_contract_tuple()).call()) for i, r in enumerate(batch[:-1])] == expected
    receipt = submit(fresh, batch)
    assert refused(fresh, receipt) == expected
    assert events(fresh, receipt, "ReadingRefused")[3]["meter"] == stranger.meter
    assert events(fresh, receipt, "ReadingsSubmitted") == [
        {"recorded": 1, "duplicates": 0, "refused": len(expected)}]
    assert [e["time"] for e in events(fresh, receipt, "ReadingRecorded")] == [last + SLOT]
    assert fresh.contract.functions.readingOf(h.meter, last + SLOT).call()[:3] == [True, 120, 70]
    # A reading a little ahead of the block's clock is fine (meters' clocks drift).
    near = (now(fresh) + 300) // SLOT * SLOT
    assert check(h.reading(fresh, near, 130, 80).as_contract_tuple()).call() == Refusal.NONE


def _malleable(signed: SignedReading) -> SignedReading:
    """The same signature with s replaced by n - s (and v flipped): valid for ecrecover."""
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    signature = signed.signature
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    twin = r + (order - s).to_bytes(32, "big") + bytes([55 - v])
    return SignedReading(signed.reading, twin)


# --- boundary trades --------------------------------------------------------------------------


def test_only_trades_across_the_meter_count_and_only_once(fresh: Evm):
    h, outside, market = house(15), uuid.uuid4(), uuid.uuid4()
    register(fresh, h)
    slot = DAY + 4 * SLOT
    inside = trade(uuid.uuid4(), h.participant, h.participant, slot, 5 * WH)   # in its own area
    sale = trade(h.participant, outside, market, slot, 7 * WH)
    purchase = trade(outside, h.participant, market, slot, 3 * WH)
    later = trade(h.participant, outside, market, slot + SLOT, 2 * WH)
    unmetered = trade(outside, uuid.uuid4(), market, slot, 9 * WH)
    record(fresh, [inside, sale, purchase, later, sale, unmetered])
    record(fresh, [purchase])  # a retried batch adds nothing
    slot_of = fresh.contract.functions.slotOf
    assert slot_of(h.pid, slot).call() == [SlotStatus.OPEN, 7 * WH, 3 * WH]
    assert slot_of(h.pid, slot + SLOT).call() == [SlotStatus.OPEN, 2 * WH, 0]
    assert slot_of(uuid_to_bytes32(outside), slot).call() == [SlotStatus.OPEN, 0, 0]
    assert boundary_energy([inside, sale, purchase, later, sale, unmetered],
                           {h.participant: h.participant}) == {
        (h.participant, slot): (7 * WH, 3 * WH), (h.participant, slot + SLOT): (2 * WH, 0)}
    # The bill counts every trade, inside ones included.
    bills = compute_bills([inside, sale, purchase, later, unmetered])
    assert Bill(*fresh.contract.functions.billOf(h.pid).call()) == bills[h.participant]


# --- rates ------------------------------------------------------------------------------------


def test_rates_history(fresh: Evm):
    functions = fresh.contract.functions
    operator = fresh.operator.address
    assert functions.ratesAt(DAY).call() == [0, 0, 0]
    receipt = admin(fresh, functions.setRates(DAY, 40 * CT, 30 * CT, 8 * CT))
    assert events(fresh, receipt, "RatesSet") == [{
        "fromSlot": DAY, "shortfallRate": 40 * CT, "gridSupplyRate": 30 * CT,
        "feedInRate": 8 * CT}]
    admin(fresh, functions.setRates(DAY + 4 * SLOT, 50 * CT, 35 * CT, 0))
    assert functions.ratesAt(DAY - SLOT).call() == [0, 0, 0]
    assert functions.ratesAt(DAY + 3 * SLOT).call() == [40 * CT, 30 * CT, 8 * CT]
    assert functions.ratesAt(DAY + 4 * SLOT).call() == [50 * CT, 35 * CT, 0]
    assert functions.ratesAt(DAY + 400 * SLOT).call() == [50 * CT, 35 * CT, 0]
    assert functions.ratesHistory().call() == [
        (DAY, 40 * CT, 30 * CT, 8 * CT), (DAY + 4 * SLOT, 50 * CT, 35 * CT, 0)]
    assert revert_of(fresh, functions.setRates(DAY + 4 * SLOT, 1, 1, 1), operator) == (
        f"RatesNotAfter(fromSlot={DAY + 4 * SLOT}, earliest={DAY + 4 * SLOT + 1})")
    assert revert_of(fresh, functions.setRates(DAY + 5 * SLOT + 1, 1, 1, 1), operator) == (
        f"NotOnSlotBoundary(time={DAY + 5 * SLOT + 1})")

    # A closed slot's rates are fixed: changes start after the newest closed slot.
    h = house(16)
    register(fresh, h)
    close(fresh, [(h.participant, DAY + 9 * SLOT)])
    assert functions.closedUntil().call() == DAY + 10 * SLOT
    assert revert_of(fresh, functions.setRates(DAY + 9 * SLOT, 1, 1, 1), operator) == (
        f"RatesNotAfter(fromSlot={DAY + 9 * SLOT}, earliest={DAY + 10 * SLOT})")
    admin(fresh, functions.setRates(DAY + 10 * SLOT, 1, 1, 1))


# --- closing slots ----------------------------------------------------------------------------


def test_closing_rules(fresh: Evm):
    h, outside, market = house(17), uuid.uuid4(), uuid.uuid4()
    register(fresh, h)
    functions = fresh.contract.functions
    admin(fresh, functions.setRates(DAY, 40 * CT, 30 * CT, 8 * CT))
    slot = DAY + 8 * SLOT
    record(fresh, [trade(h.participant, outside, market, slot, 10 * WH)])
    submit(fresh, [h.reading(fresh, slot, 1000, 500), h.reading(fresh, slot + SLOT, 1004, 506)])

    closes = functions.closeSlots
    current = now(fresh) // SLOT * SLOT
    pid = h.pid
    assert revert_of(fresh, closes([pid], [slot, slot]), fresh.outsider) == "LengthMismatch()"
    assert revert_of(fresh, closes([], []), fresh.outsider) == "EmptyBatch()"
    stranger = uuid_to_bytes32(outside)
    assert revert_of(fresh, closes([pid, stranger], [slot, slot]), fresh.outsider) == (
        f"NotMetered(index=1, participant=0x{stranger.hex()})")
    assert revert_of(fresh, closes([pid], [slot + 1]), fresh.outsider) == (
        f"InvalidSlot(index=0, slot={slot + 1})")
    due = current + SLOT + 3600
    assert revert_of(fresh, closes([pid], [current]), fresh.outsider) == (
        f"SlotNotDue(index=0, dueAt={due})")

    receipt = close(fresh, [(h.participant, slot)])
    expected = dict(participant=pid, slot=slot, meter=h.meter, importEnergy=4 * WH,
                    exportEnergy=6 * WH, sold=10 * WH, bought=0,
                    shortfallCharge=4 * WH * 40, excessCharge=4 * WH * 30, surplusCredit=0)
    assert events(fresh, receipt, "SlotBalanced") == [expected]
    reference = compute_balancing(
        [trade(h.participant, outside, market, slot, 10 * WH)], {h.participant: h.participant},
        {h.participant: {slot: (1000, 500), slot + SLOT: (1004, 506)}},
        [Rates(DAY, 40 * CT, 30 * CT, 8 * CT)], [(h.participant, slot)])
    assert reference[0].shortfall_charge == expected["shortfallCharge"]
    assert reference[0].excess_charge == expected["excessCharge"]
    assert functions.balancingOf(pid).call() == [4 * WH * 70, 0]
    assert functions.balancingOf(OPERATOR).call() == [0, 4 * WH * 70]

    # Closing again does nothing; a late trade is recorded but not balanced.
    assert functions.closeSlots([pid], [slot]).call() == 0
    again = close(fresh, [(h.participant, slot)])
    assert events(fresh, again, "SlotBalanced") == []
    late = trade(h.participant, outside, market, slot, 3 * WH)
    receipt = record(fresh, [late])
    assert events(fresh, receipt, "BoundaryTradeAfterClose") == [
        {"tradeId": uuid_to_bytes32(late.trade_id), "participant": pid, "slot": slot}]
    assert functions.slotOf(pid, slot).call() == [SlotStatus.BALANCED, 10 * WH, 0]
    assert functions.billOf(pid).call()[0] == 13 * WH

    # No reading at the end by the deadline: unmetered; a later reading does not reopen it.
    nxt = slot + SLOT
    receipt = close(fresh, [(h.participant, nxt)])
    assert events(fresh, receipt, "SlotUnmetered") == [
        {"participant": pid, "slot": nxt, "sold": 0, "bought": 0}]
    submit(fresh, [h.reading(fresh, nxt + SLOT, 2000, 506)])
    close(fresh, [(h.participant, nxt)])
    assert functions.slotOf(pid, nxt).call() == [SlotStatus.UNMETERED, 0, 0]
    assert functions.balancingOf(pid).call() == [4 * WH * 70, 0]


def test_deviations_below_one_wh_are_rounding_and_surplus_is_credited(fresh: Evm):
    h, outside, market = house(18), uuid.uuid4(), uuid.uuid4()
    register(fresh, h)
    admin(fresh, fresh.contract.functions.setRates(DAY, 40 * CT, 30 * CT, 8 * CT))
    slot, after = DAY, DAY + SLOT
    record(fresh, [trade(h.participant, outside, market, slot, 17 * WH + WH * 6 // 10),
                   trade(outside, h.participant, market, slot, 2 * WH + 1),
                   trade(h.participant, outside, market, after, 5 * WH)])
    submit(fresh, [h.reading(fresh, slot, 0, 0), h.reading(fresh, after, 3, 17),
                   h.reading(fresh, after + SLOT, 3, 17 + 9)])
    receipt = close(fresh, [(h.participant, slot), (h.participant, after)])
    balanced = events(fresh, receipt, "SlotBalanced")
    # 17.6 Wh sold, 17 measured; 2.000...1 Wh bought, 3 imported: both short of a Wh.
    assert [(b["shortfallCharge"], b["excessCharge"], b["surplusCredit"]) for b in balanced] == [
        (0, 0, 0), (0, 0, 4 * WH * 8)]


# --- whole recordings -------------------------------------------------------------------------


def houses_of(records: Sequence[TradeRecord]) -> list[uuid.UUID]:
    """Participants that are also markets: gsy-e houses, metered at their connection."""
    markets = {r.market for r in records}
    return sorted(({r.seller for r in records} | {r.buyer for r in records}) & markets)


@pytest.mark.parametrize("name", [path.stem for path in RECORDINGS])
@pytest.mark.parametrize("deviate", [False, True], ids=["exact", "deviations"])
def test_a_recording_balances_like_the_reference(
    fresh: Evm, recordings: dict[str, list[TradeRecord]], name: str, deviate: bool
):
    records = recordings[name]
    homes = {p: p for p in houses_of(records)}
    metered = [house(100 + i, participant) for i, participant in enumerate(homes)]
    functions = fresh.contract.functions
    rates = [Rates(DAY, 40 * CT, 30 * CT, 8 * CT), Rates(DAY + 48 * SLOT, 55 * CT, 33 * CT, 0)]
    for rate in rates:
        admin(fresh, functions.setRates(rate.from_slot, rate.shortfall, rate.grid_supply,
                                        rate.feed_in))
    for h in metered:
        register(fresh, h)
    record(fresh, records)

    slots = sorted({r.time_slot for r in records})
    # One house takes and gives a quarter more than it traded, another (if any) half of it.
    factors = {h.participant: f for h, f in zip(metered, (1.25, 0.5), strict=False)}
    factors = factors if deviate else {}
    energy = boundary_energy(records, homes)
    registers = matching_registers(energy, slots, factors)
    for h in metered:
        signed = [h.reading(fresh, t, imp, exp)
                  for t, (imp, exp) in sorted(registers[h.participant].items())]
        for start in range(0, len(signed), 40):
            submit(fresh, signed[start : start + 40])

    every_slot = range(slots[0], slots[-1] + SLOT, SLOT)
    pairs = [(h.participant, slot) for h in metered for slot in every_slot]
    logs = []
    for start in range(0, len(pairs), 100):
        logs += events(fresh, close(fresh, pairs[start : start + 100]), "SlotBalanced")
    assert len(logs) == len(pairs)

    reference = compute_balancing(records, homes, registers, rates, pairs)
    assert [_as_event(balance, metered) for balance in reference] == logs
    if not deviate:
        assert all(balance.charges == 0 and balance.surplus_credit == 0 for balance in reference)
    else:
        charged = {b.participant for b in reference if b.charges or b.surplus_credit}
        assert metered[0].participant in charged <= set(factors)

    per_participant, operator = balancing_totals(reference)
    for participant, totals in per_participant.items():
        assert functions.balancingOf(uuid_to_bytes32(participant)).call() == [
            totals.charges, totals.credits]
    assert functions.balancingOf(OPERATOR).call() == [operator.charges, operator.credits]

    # The books balance: everything receivable is payable by someone, operator included.
    ids = {p for r in records for p in (r.seller, r.buyer)}
    receivable = payable = 0
    for pid in [uuid_to_bytes32(p) for p in ids] + [OPERATOR]:
        _, _, money_in, money_out = functions.billOf(pid).call()
        charges, credits = functions.balancingOf(pid).call()
        receivable += money_in + credits
        payable += money_out + charges
    assert receivable == payable
    assert receivable > sum(r.price for r in records) or not deviate


def _as_event(balance: SlotBalance, metered: Sequence[House]) -> dict[str, Any]:
    meter = {h.participant: h.meter for h in metered}[balance.participant]
    return dict(participant=uuid_to_bytes32(balance.participant), slot=balance.slot, meter=meter,
                importEnergy=balance.import_energy, exportEnergy=balance.export_energy,
                sold=balance.sold, bought=balance.bought,
                shortfallCharge=balance.shortfall_charge, excessCharge=balance.excess_charge,
                surplusCredit=balance.surplus_credit)


# --- billing periods --------------------------------------------------------------------------


def test_periods_fix_statements_and_late_entries_go_to_the_next_one(fresh: Evm):
    h, buyer, market = house(19), uuid.uuid4(), uuid.uuid4()
    register(fresh, h)
    functions = fresh.contract.functions
    operator = fresh.operator.address
    admin(fresh, functions.setRates(DAY, 40 * CT, 30 * CT, 8 * CT))
    first = trade(h.participant, buyer, market, DAY, 10 * WH, price=250 * CT)
    record(fresh, [first])
    submit(fresh, [h.reading(fresh, DAY, 0, 0), h.reading(fresh, DAY + SLOT, 1, 8)])
    close(fresh, [(h.participant, DAY)])  # 2 Wh short at 40, 1 Wh excess at 30

    assert revert_of(fresh, functions.statementOf(1, h.pid), operator) == "UnknownPeriod(period=1)"
    receipt = admin(fresh, functions.closePeriod(DAY + 96 * SLOT))
    assert events(fresh, receipt, "PeriodClosed") == [{"period": 1, "endSlot": DAY + 96 * SLOT}]
    assert functions.periodCount().call() == 1
    assert functions.periodEnd(1).call() == DAY + 96 * SLOT
    charges = 2 * WH * 40 + 1 * WH * 30
    one = [10 * WH, 0, 250 * CT, 0, charges, 0, 250 * CT - charges, False]
    assert list(functions.statementOf(1, h.pid).call()) == one
    assert list(functions.statementOf(1, uuid_to_bytes32(buyer)).call()) == [
        0, 10 * WH, 0, 250 * CT, 0, 0, -250 * CT, False]
    assert list(functions.statementOf(1, OPERATOR).call()) == [
        0, 0, 0, 0, 0, charges, charges, False]

    # A trade of period 1's day recorded now, and its balancing, belong to period 2.
    late = trade(h.participant, buyer, market, DAY + SLOT, 4 * WH, price=100 * CT)
    record(fresh, [late])
    submit(fresh, [h.reading(fresh, DAY + 2 * SLOT, 1, 12)])
    close(fresh, [(h.participant, DAY + SLOT)])
    assert list(functions.statementOf(1, h.pid).call()) == one
    assert revert_of(fresh, functions.closePeriod(DAY + 96 * SLOT), operator) == (
        f"PeriodNotAfter(endSlot={DAY + 96 * SLOT}, previousEnd={DAY + 96 * SLOT})")
    future = (now(fresh) // SLOT + 10) * SLOT
    assert revert_of(fresh, functions.closePeriod(future), operator) == (
        f"PeriodNotOver(endSlot={future})")
    admin(fresh, functions.closePeriod(DAY + 192 * SLOT))
    assert list(functions.statementOf(2, h.pid).call()) == [
        4 * WH, 0, 100 * CT, 0, 0, 0, 100 * CT, False]
    assert list(functions.statementOf(1, h.pid).call()) == one
    bill = functions.billOf(h.pid).call()
    assert bill == [14 * WH, 0, 350 * CT, 0]

    # A period without changes has an empty statement; paying is recorded once.
    admin(fresh, functions.closePeriod(DAY + 288 * SLOT))
    assert list(functions.statementOf(3, h.pid).call()) == [0, 0, 0, 0, 0, 0, 0, False]
    receipt = admin(fresh, functions.markPaid(1, h.pid))
    assert events(fresh, receipt, "StatementPaid") == [{"period": 1, "participant": h.pid}]
    assert list(functions.statementOf(1, h.pid).call())[-1] is True
    assert list(functions.statementOf(2, h.pid).call())[-1] is False
    assert revert_of(fresh, functions.markPaid(1, h.pid), operator) == (
        f"AlreadyPaid(period=1, participant=0x{h.pid.hex()})")
    assert revert_of(fresh, functions.markPaid(4, h.pid), operator) == "UnknownPeriod(period=4)"


# --- the writers' worst case ------------------------------------------------------------------


def test_no_trade_costs_more_than_the_bridge_plans_for(fresh: Evm):
    """The bridge sizes each batch's gas limit by WORST_GAS_PER_TRADE: a trade must never
    cost more, or full batches run out of gas. The dearest trade: a new trade id between two
    metered parties, the first across their meters in its slot, and the first change of both
    bills in a new period (which stores the closed period's amounts first)."""
    functions = fresh.contract.functions
    pairs = [(house(9000 + 2 * i), house(9001 + 2 * i)) for i in range(40)]
    market = uuid.UUID(int=1)
    for seller, buyer in pairs:
        register(fresh, seller)
        register(fresh, buyer)

    def per_trade(slot: int) -> float:
        records = [trade(s.participant, b.participant, market, slot, 7 * WH + 1, 10**18 + 1)
                   for s, b in pairs]
        call = functions.recordTrades([r.as_contract_tuple() for r in records])
        data = bytes.fromhex(call._encode_transaction_data()[2:])
        receipt = send(fresh, call, fresh.recorder.address)
        execution = (receipt["gasUsed"] - TRANSACTION_GAS - calldata_gas(data)
                     - BATCH_OVERHEAD_GAS)
        return execution / len(records)

    new_bills = per_trade(DAY)
    admin(fresh, functions.closePeriod(DAY + 96 * SLOT))
    new_period = per_trade(DAY + 97 * SLOT)
    worst = max(new_bills, new_period)
    assert 0.85 * WORST_GAS_PER_TRADE < worst <= WORST_GAS_PER_TRADE, (
        f"a trade costs up to {worst:,.0f} gas (new bills {new_bills:,.0f}, first change in a "
        f"new period {new_period:,.0f}); WORST_GAS_PER_TRADE = {WORST_GAS_PER_TRADE:,} must "
        "cover it without being wildly loose")
