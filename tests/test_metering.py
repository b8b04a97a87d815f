"""Meter readings, their signing recipe and the reference balancing rules, without a chain."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data

from pilotchain.metering import (
    WH,
    Domain,
    MeteringError,
    MeterReading,
    Rates,
    SignedReading,
    SlotStatus,
    balance_slot,
    balancing_totals,
    energy_to_wh,
    matching_registers,
    meter_id,
    minutes_anchor,
    rates_at,
    sign_reading,
    wh_to_energy,
)

# The worked example of docs/metering.md: a throwaway key, never a real meter's.
EXAMPLE_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
EXAMPLE_DOMAIN = Domain(8765, "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC")
EXAMPLE_METER = meter_id("7d1f0a2e-3c4b-4d5e-8f60-718293a4b5c6")
CT = 10**18


def example_minutes() -> list[MeterReading]:
    return [MeterReading(EXAMPLE_METER, 1_782_000_000 + 60 * i, 1_234_500 + 4 * i, 89_000 + i)
            for i in range(1, 15)]


def test_the_documented_example_signs_to_the_documented_values():
    minutes = example_minutes()
    assert minutes[0].digest(EXAMPLE_DOMAIN).hex() == (
        "8498a65f001ac896ca25ff8c22beefed8546f52d796b4ffe76d5080acb481786")
    anchor = minutes_anchor(minutes, EXAMPLE_DOMAIN)
    assert anchor.hex() == "9ab2720427786b8baf77c8f78d89132f947285184174851b0c637f23b81c4274"
    reading = MeterReading(EXAMPLE_METER, 1_782_000_900, 1_234_560, 89_015, anchor)
    assert EXAMPLE_DOMAIN.separator().hex() == (
        "435a559d982746f4fe5d19e0535eee2f264267c44e8bef16baca5d196a244729")
    assert reading.struct_hash().hex() == (
        "f1938bea4f19eb4d04795edd7101fb3d80772a8c7f5921506e7e9c20d982b38f")
    assert reading.digest(EXAMPLE_DOMAIN).hex() == (
        "53b7ec96ae7f99bf01557b97d3c7b23eb43e403e642ccaf2a096b1d82c61827d")
    signed = sign_reading(reading, EXAMPLE_KEY, EXAMPLE_DOMAIN)
    assert signed.signature.hex() == (
        "18bef2487e2d82a360fecbe9279e5ee165f499fe75a977f68dbb69938a77bed9"
        "4cb1500a3e5435a1386dd0c81ec834daefa5f008f9242cdfe97a56e98cc9f40b1c")
    address = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    assert Account.from_key(EXAMPLE_KEY).address == address
    assert signed.signer(EXAMPLE_DOMAIN) == address


def test_hand_made_digest_equals_eth_accounts_typed_data_hash():
    rng = random.Random(4)
    for _ in range(50):
        reading = MeterReading(rng.randbytes(32), rng.getrandbits(64), rng.getrandbits(64),
                               rng.getrandbits(64), rng.randbytes(32))
        domain = Domain(rng.getrandbits(32), "0x" + rng.randbytes(20).hex())
        message = encode_typed_data(full_message=reading.typed_data(domain))
        assert _hash_eip191_message(message) == reading.digest(domain)


def test_signing_and_recovery_agree_with_eth_account():
    """sign_reading and SignedReading.signer call libsecp256k1 directly: the same signature
    as eth-account's EIP-712 signing of the typed data a wallet sees, and the same signer
    recovered, for high-s (malleated) signatures too; where none recovers, the same error
    (v other than 27 and 28, r or s out of range, a short signature)."""
    rng = random.Random(7)
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    for _ in range(40):
        key = Account.from_key(rng.randbytes(32))
        reading = MeterReading(rng.randbytes(32), rng.getrandbits(64), rng.getrandbits(64),
                               rng.getrandbits(64), rng.randbytes(32))
        domain = Domain(rng.getrandbits(32), "0x" + rng.randbytes(20).hex())
        signed = sign_reading(reading, key, domain)
        typed = key.sign_message(encode_typed_data(full_message=reading.typed_data(domain)))
        assert signed.signature == bytes(typed.signature)
        assert sign_reading(reading, key.key, domain) == signed
        r, s, v = signed.signature[:32], signed.signature[32:64], signed.signature[64]
        malleated = r + (order - int.from_bytes(s, "big")).to_bytes(32, "big") + bytes([55 - v])
        garbage = rng.randbytes(64) + bytes([rng.choice((27, 28))])
        for signature in (signed.signature, malleated, garbage):
            other = dataclasses.replace(signed, signature=signature)
            assert outcome(other.signer, domain) == outcome(
                Account._recover_hash, reading.digest(domain), signature=signature)
        assert dataclasses.replace(signed, signature=malleated).signer(domain) == key.address
    reading = MeterReading(EXAMPLE_METER, 900, 1, 2)
    for bad in (bytes(65), b"\x01" * 64 + b"\x1d", b"\x01" * 64 + b"\x00", b"\x01" * 64,
                b"\xff" * 64 + b"\x1b"):
        assert outcome(SignedReading(reading, bad).signer, EXAMPLE_DOMAIN) == outcome(
            Account._recover_hash, reading.digest(EXAMPLE_DOMAIN), signature=bad)


def outcome(call: Callable[..., str], *args: Any, **kwargs: Any) -> tuple[str, str]:
    """What ``call`` returned, or the type and words of what it raised."""
    try:
        return "recovered", call(*args, **kwargs)
    except Exception as error:
        return type(error).__name__, str(error)


def test_a_signature_binds_chain_contract_and_every_field():
    key = Account.from_key(b"\x05" * 32)
    reading = MeterReading(EXAMPLE_METER, 900, 10, 20)
    signed = sign_reading(reading, key, EXAMPLE_DOMAIN)
    assert signed.signer(EXAMPLE_DOMAIN) == key.address
    assert signed.signer(dataclasses.replace(EXAMPLE_DOMAIN, chain_id=1)) != key.address
    assert signed.signer(dataclasses.replace(EXAMPLE_DOMAIN, contract="0x" + "11" * 20)) != (
        key.address)
    for field, value in (("time", 1800), ("import_wh", 11), ("export_wh", 21),
                         ("minutes_anchor", b"\x01" * 32), ("meter", bytes(31) + b"\x01")):
        moved = dataclasses.replace(signed, reading=dataclasses.replace(reading, **{field: value}))
        assert moved.signer(EXAMPLE_DOMAIN) != key.address, field


def test_the_minutes_anchor_detects_any_change():
    minutes = example_minutes()
    anchor = minutes_anchor(minutes, EXAMPLE_DOMAIN)
    assert minutes_anchor([], EXAMPLE_DOMAIN) == bytes(32)
    changed = [*minutes[:3], dataclasses.replace(minutes[3], import_wh=1), *minutes[4:]]
    for other in (changed, minutes[:-1], minutes[1:]):
        assert minutes_anchor(other, EXAMPLE_DOMAIN) != anchor
    other_chain = dataclasses.replace(EXAMPLE_DOMAIN, chain_id=1)
    assert minutes_anchor(minutes, other_chain) != anchor


@pytest.mark.parametrize(("minutes", "message"), [
    (lambda m: [m[1], m[0]], "strictly rising time"),
    (lambda m: [m[0], m[0]], "strictly rising time"),
    (lambda m: [m[0], dataclasses.replace(m[1], meter=b"\x01" * 32)], "of one meter"),
    (lambda m: [dataclasses.replace(m[0], minutes_anchor=b"\x01" * 32)], "zero anchor"),
])
def test_a_malformed_minute_list_is_refused(minutes, message: str):
    with pytest.raises(MeteringError, match=message):
        minutes_anchor(minutes(example_minutes()), EXAMPLE_DOMAIN)


@pytest.mark.parametrize(("field", "value"), [
    ("time", -1), ("import_wh", 2**64), ("export_wh", 1.5), ("time", True),
])
def test_readings_out_of_the_contract_range_are_refused(field: str, value: object):
    fields = {"meter": EXAMPLE_METER, "time": 0, "import_wh": 0, "export_wh": 0, field: value}
    with pytest.raises(MeteringError, match=f"{field} must be an integer"):
        MeterReading(**fields)  # type: ignore[arg-type]
    with pytest.raises(MeteringError, match="32 bytes"):
        MeterReading(b"\x01", 0, 0, 0)


def test_wh_conversions():
    assert WH == 10**15
    assert wh_to_energy(1) * 1000 == 10**18  # 1000 Wh are 1 kWh
    assert energy_to_wh(wh_to_energy(12_345)) == 12_345
    assert energy_to_wh(WH - 1) == 0


# --- reference balancing ------------------------------------------------------------------


def test_balance_slot_by_the_rules():
    p = uuid.uuid4()
    rates = Rates(0, shortfall=40 * CT, grid_supply=30 * CT + 1, feed_in=8 * CT)
    # Sold 10 Wh, exported 7: 3 Wh short. Bought 2 Wh, imported 5: 3 Wh excess.
    short = balance_slot(p, 900, 10 * WH, 2 * WH, (100, 50), (105, 57), rates)
    assert (short.status, short.import_energy, short.export_energy) == (
        SlotStatus.BALANCED, 5 * WH, 7 * WH)
    assert (short.shortfall, short.excess, short.surplus, short.unused) == (3 * WH, 3 * WH, 0, 0)
    assert short.shortfall_charge == 3 * WH * 40
    assert short.excess_charge == 3 * WH * 30 + (3 * WH) // 10**18  # rounded down
    # Sold 1 Wh, exported 4: 3 Wh surplus. Bought 6 Wh, imported 1: 5 Wh unused, no charge.
    spare = balance_slot(p, 900, WH, 6 * WH, (0, 0), (1, 4), rates)
    assert (spare.surplus, spare.unused, spare.charges, spare.surplus_credit) == (
        3 * WH, 5 * WH, 0, 3 * WH * 8)
    # Below one Wh either way: register rounding, no charge.
    rounding = balance_slot(p, 900, 17 * WH + WH * 6 // 10, 0, (0, 0), (0, 17), rates)
    assert (rounding.shortfall, rounding.charges) == (0, 0)
    assert balance_slot(p, 900, WH, 0, None, (0, 1), rates).status == SlotStatus.UNMETERED


def test_rates_apply_from_their_slot_until_the_next_change():
    history = [Rates(900, 1, 1, 1), Rates(2700, 2, 2, 0)]
    assert rates_at(history, 0) == Rates(0, 0, 0, 0)
    assert rates_at(history, 900) == history[0]
    assert rates_at(history, 1800) == history[0]
    assert rates_at(history, 2700) == history[1]
    assert rates_at(list(reversed(history)), 99_999) == history[1]


def test_operator_takes_the_other_side():
    p, q = uuid.uuid4(), uuid.uuid4()
    rates = Rates(0, 40 * CT, 30 * CT, 8 * CT)
    balances = [balance_slot(p, 0, 10 * WH, 0, (0, 0), (0, 7), rates),
                balance_slot(q, 0, 0, 0, (0, 0), (0, 4), rates)]
    totals, operator = balancing_totals(balances)
    assert totals[p].charges == 3 * WH * 40 and totals[q].credits == 4 * WH * 8
    assert operator.credits == sum(t.charges for t in totals.values())
    assert operator.charges == sum(t.credits for t in totals.values())


def test_matching_registers_stay_within_a_wh_of_the_target():
    rng = random.Random(9)
    p = uuid.uuid4()
    slots = [900 * i for i in range(200)]
    energy = {(p, s): (rng.randrange(0, 50 * WH), rng.randrange(0, 50 * WH)) for s in slots}
    for factor in (1.0, 1.3):
        readings = matching_registers(energy, slots, {p: factor})[p]
        assert readings[0] == (0, 0)
        for s in slots:
            sold, bought = energy[(p, s)]
            measured_import = (readings[s + 900][0] - readings[s][0]) * WH
            measured_export = (readings[s + 900][1] - readings[s][1]) * WH
            assert abs(measured_import - round(bought * factor)) < WH
            assert abs(measured_export - round(sold * factor)) < WH
