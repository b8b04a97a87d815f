"""The gsy-e side of the settlement format: parsing, ids, fixed point, bills, log decoding."""

from __future__ import annotations

import copy
import json
import math
import random
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from recordings import (
    DATA,
    RECORDINGS,
    SETTLEMENT_RECORDING,
    decimals_of,
    kept_on_chain,
    market_kind,
    on_scale,
)

from pilotchain.errors import PilotChainError
from pilotchain.trades import (
    ENERGY_DECIMALS,
    MAX_AMOUNT,
    PRICE_DECIMALS,
    TRADE_SETTLED_TOPIC,
    Bill,
    InvalidLog,
    InvalidTrade,
    TradeFormatError,
    TradeRecord,
    bytes32_to_uuid,
    compute_bills,
    decode_trade_settled,
    decode_trade_settled_logs,
    format_time_slot,
    from_fixed,
    iter_recording,
    parse_event,
    parse_time_slot,
    parse_trade,
    read_recording,
    to_fixed,
    uuid_to_bytes32,
)

SLOT_2026_06_21 = 1_782_000_000  # 2026-06-21T00:00:00Z


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def first_event() -> dict[str, Any]:
    return events_of(DATA / "default_2a_one_sided.jsonl")[0]


# --- parsing ---------------------------------------------------------------------------


def test_parse_event_maps_every_field(first_event: dict[str, Any]):
    record = parse_event(first_event)
    assert record == TradeRecord(
        trade_id=uuid.UUID("428d29ba-5294-4f57-8288-6e4a7bb8b05d"),
        market=uuid.UUID("6b3c420b-e4f2-49eb-a762-4db010a3e4ec"),
        time_slot=SLOT_2026_06_21,
        # The seller in this market is the area House 1; its origin is the storage device.
        seller=uuid.UUID("9477b079-7da5-4e9f-b75a-26d7053fbaee"),
        buyer=uuid.UUID("f49442f9-1b93-4a6f-ae2e-fc2f8711fad9"),
        seller_origin=uuid.UUID("1387d892-95a4-4aef-8f48-e7f52133beb5"),
        buyer_origin=uuid.UUID("f49442f9-1b93-4a6f-ae2e-fc2f8711fad9"),
        energy=25_000_000_000_000_000,  # 0.025 kWh
        price=660_714_285_750_000_000,  # 0.66071428575 ct
        fee=0,
    )


def test_forwarded_leg_has_the_area_as_buyer(first_event: dict[str, Any]):
    second = events_of(DATA / "default_2a_one_sided.jsonl")[1]
    record = parse_event(second)
    assert record.market == uuid.UUID(second["market_id"])
    assert record.seller == uuid.UUID(second["trade"]["seller"]["uuid"])
    assert record.buyer == uuid.UUID("9477b079-7da5-4e9f-b75a-26d7053fbaee")  # House 1
    assert record.buyer_origin == uuid.UUID("f49442f9-1b93-4a6f-ae2e-fc2f8711fad9")  # Cell Tower
    assert record.buyer != record.buyer_origin


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.stem)
def test_every_recorded_trade_parses_and_maps_back(path: Path):
    events = events_of(path)
    records = read_recording(path)
    assert len(records) == len(events) > 0
    for event, record in zip(events, records, strict=True):
        trade = event["trade"]
        back = record.as_gsy_fields()
        assert back["id"] == trade["id"]
        assert back["market_id"] == event["market_id"]
        assert back["time_slot"] == trade["time_slot"]
        for role in ("seller", "buyer"):
            assert back[role] == {
                "uuid": trade[role]["uuid"],
                "origin_uuid": trade[role]["origin_uuid"],
            }
        # Exact float equality: the scale keeps every recorded value with at most 18
        # decimals, and rounds the few with more (below) half-to-even.
        assert back["energy"] == kept_on_chain(trade["energy"])
        assert back["price"] == kept_on_chain(trade["price"])
        assert back["fee_price"] == kept_on_chain(trade["fee_price"])


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.stem)
def test_only_energies_of_the_settlement_run_have_more_than_18_decimals(path: Path):
    """Float differences (a deviation, a residual): 41 settlement-market and 2 spot energies
    of the settlement run (offer trades and chain legs alike). Every other amount of every
    recording is kept exactly."""
    beyond = [(key, event["trade"]) for event in events_of(path)
              for key in ("energy", "price", "fee_price")
              if decimals_of(event["trade"][key]) > 18]
    assert {key for key, _ in beyond} <= {"energy"}
    kinds = Counter(market_kind(trade) for _, trade in beyond)
    assert kinds == (Counter(settlement=41, spot=2) if path == SETTLEMENT_RECORDING else {})
    for _, trade in beyond:
        recorded = Decimal(repr(trade["energy"]))
        kept = Decimal(parse_trade(trade, uuid.uuid4()).energy).scaleb(-ENERGY_DECIMALS)
        assert kept == on_scale(recorded) != recorded
        assert abs(kept - recorded) <= Decimal("5e-19")


def test_grid_fee_recording_keeps_its_fees():
    records = read_recording(DATA / "grid_fees_default_2a_one_sided.jsonl")
    fees = {record.fee for record in records}
    assert to_fixed(0.1, PRICE_DECIMALS) in fees
    assert len(fees) > 1


def test_parse_trade_takes_a_serializable_dict_and_the_market(first_event: dict[str, Any]):
    record = parse_trade(first_event["trade"], uuid.UUID(first_event["market_id"]))
    assert record == parse_event(first_event)


def test_null_fee_is_zero_and_null_origin_is_the_party(first_event: dict[str, Any]):
    trade = copy.deepcopy(first_event["trade"])
    trade["fee_price"] = None
    trade["seller"]["origin_uuid"] = None
    record = parse_trade(trade, first_event["market_id"])
    assert record.fee == 0
    assert record.seller_origin == record.seller


def test_the_hook_time_slot_stands_in_for_a_missing_one(first_event: dict[str, Any]):
    trade = copy.deepcopy(first_event["trade"])
    del trade["time_slot"]
    record = parse_trade(trade, first_event["market_id"], time_slot="2026-06-21 00:15:00+00:00")
    assert record.time_slot == SLOT_2026_06_21 + 900


def _unix(text: str) -> int:
    """gsy-e's zone-less slot text as UTC unix seconds, without pilotchain.trades."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_settlement_and_future_market_trades_keep_the_slot_they_deliver_in():
    """A settlement market's trade comes after its slot and carries that slot (hook and trade
    alike); a future market's comes before, with no slot from the hook. Neither may be
    counted for the slot it was made in."""
    kinds: Counter[str] = Counter()
    for event in events_of(SETTLEMENT_RECORDING):
        trade, kind = event["trade"], market_kind(event["trade"])
        kinds[kind] += 1
        slot = parse_event(event).time_slot
        assert slot == _unix(trade["time_slot"])
        made = _unix(trade["creation_time"])
        if kind == "settlement":
            assert _unix(event["time_slot"]) == slot <= made - 900
        elif kind == "future":
            assert event["time_slot"] is None
            assert made < slot
        else:
            assert _unix(event["time_slot"]) == slot <= made < slot + 900
    assert kinds == Counter(spot=315, settlement=99, future=83)


def _broken(first_event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    event = copy.deepcopy(first_event)
    target = event
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return event


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "problem"),
    [
        (("trade", "id"), _DELETE, "field 'id'", "is missing"),
        (("trade", "id"), "not-a-uuid", "field 'id'", "is not a uuid"),
        (("trade", "id"), 42, "field 'id'", "must be a uuid string, not int"),
        (("market_id",), _DELETE, "event field 'market_id'", "is missing"),
        (("market_id",), "6b3c420b", "field 'market_id'", "is not a uuid"),
        (("trade", "seller"), _DELETE, "field 'seller'", "is missing"),
        (("trade", "buyer"), "Cell Tower", "field 'buyer'", "must be an object"),
        (("trade", "seller", "uuid"), _DELETE, "field 'seller.uuid'", "is missing"),
        (("trade", "buyer", "origin_uuid"), _DELETE, "field 'buyer.origin_uuid'", "is missing"),
        (("trade", "buyer", "origin_uuid"), "xyz", "field 'buyer.origin_uuid'", "is not a uuid"),
        (("trade", "energy"), _DELETE, "field 'energy'", "is missing"),
        (("trade", "energy"), -0.025, "field 'energy'", "must not be negative"),
        (("trade", "energy"), 0.0, "field 'energy'", "must be at least 1e-18"),
        (("trade", "energy"), 1e-19, "field 'energy'", "must be at least 1e-18"),
        (("trade", "energy"), 1e12, "field 'energy'", "must be at most 7.92282e+10"),
        (("trade", "energy"), math.nan, "field 'energy'", "must be a finite number"),
        (("trade", "energy"), math.inf, "field 'energy'", "must be a finite number"),
        (("trade", "energy"), "0.025", "field 'energy'", "must be a number, not str"),
        (("trade", "energy"), True, "field 'energy'", "must be a number, not bool"),
        (("trade", "price"), -1.0, "field 'price'", "must not be negative"),
        (("trade", "price"), None, "field 'price'", "must be a number, not NoneType"),
        (("trade", "fee_price"), _DELETE, "field 'fee_price'", "is missing"),
        (("trade", "fee_price"), -0.1, "field 'fee_price'", "must not be negative"),
        (("trade", "time_slot"), "yesterday", "field 'time_slot'", "is not a usable time"),
        (("trade", "time_slot"), "2026-06-21T00:00:00.5", "field 'time_slot'", "whole second"),
        (("trade", "time_slot"), 1782000000, "field 'time_slot'", "must be an ISO time"),
        (("trade", "time_slot"), "2026-06-21T00:15:00", "field 'time_slot'", "differs from"),
    ],
)
def test_malformed_trades_name_the_field(
    first_event: dict[str, Any], path: tuple[str, ...], value: Any, field: str, problem: str
):
    with pytest.raises(InvalidTrade) as failure:
        parse_event(_broken(first_event, path, value))
    assert failure.value.field == field
    assert problem in str(failure.value)
    assert field in str(failure.value)
    assert isinstance(failure.value, PilotChainError)


def test_time_slot_before_1970_is_refused(first_event: dict[str, Any]):
    event = _broken(first_event, ("trade", "time_slot"), "1969-12-31T23:00:00")
    event["time_slot"] = "1969-12-31 23:00:00+00:00"
    with pytest.raises(InvalidTrade, match="field 'time_slot' is outside the contract's range"):
        parse_event(event)


def test_missing_time_slot_everywhere_is_refused(first_event: dict[str, Any]):
    event = _broken(first_event, ("trade", "time_slot"), _DELETE)
    del event["time_slot"]
    with pytest.raises(InvalidTrade, match="field 'time_slot' is missing"):
        parse_event(event)


def test_error_message_names_the_trade(first_event: dict[str, Any]):
    with pytest.raises(InvalidTrade) as failure:
        parse_event(_broken(first_event, ("trade", "energy"), -1.0))
    assert str(failure.value) == (
        "Trade 428d29ba-5294-4f57-8288-6e4a7bb8b05d cannot be recorded: "
        "field 'energy' must not be negative, not -1.0."
    )


@pytest.mark.parametrize("value", [[], "trade", None, 3])
def test_non_objects_are_refused(value: Any):
    with pytest.raises(InvalidTrade, match="must be a JSON object"):
        parse_trade(value, uuid.uuid4())
    with pytest.raises(InvalidTrade, match="must be a JSON object"):
        parse_event(value)


def test_recording_lines_that_are_not_json_are_named(first_event: dict[str, Any]):
    lines = [json.dumps(first_event), "", "{oops"]
    with pytest.raises(InvalidTrade, match="line 3 is not JSON"):
        list(iter_recording(lines))


# --- ids -------------------------------------------------------------------------------


def test_uuid_is_its_integer_zero_padded_on_the_left():
    value = uuid.UUID("428d29ba-5294-4f57-8288-6e4a7bb8b05d")
    encoded = uuid_to_bytes32(value)
    assert encoded.hex() == "00" * 16 + "428d29ba52944f5782886e4a7bb8b05d"
    assert int.from_bytes(encoded, "big") == value.int
    assert uuid_to_bytes32(str(value)) == encoded
    assert bytes32_to_uuid(encoded) == value


def test_uuid_round_trip_over_many_values():
    rng = random.Random(11)
    for _ in range(2000):
        value = uuid.UUID(int=rng.getrandbits(128))
        assert bytes32_to_uuid(uuid_to_bytes32(value)) == value
    assert bytes32_to_uuid(bytes(32)) == uuid.UUID(int=0)
    assert bytes32_to_uuid(bytes(16) + b"\xff" * 16) == uuid.UUID(int=2**128 - 1)


@pytest.mark.parametrize("raw", [b"\x01" + bytes(31), bytes(31), bytes(33)])
def test_bytes32_that_is_no_uuid_is_refused(raw: bytes):
    with pytest.raises(TradeFormatError, match="is not a gsy-e id"):
        bytes32_to_uuid(raw)


# --- fixed point -----------------------------------------------------------------------


def test_scales_keep_gsy_values_to_at_least_1e_6():
    assert ENERGY_DECIMALS >= 6
    assert PRICE_DECIMALS >= 6
    assert to_fixed(0.000001, ENERGY_DECIMALS) == 10 ** (ENERGY_DECIMALS - 6)
    assert to_fixed(0.000001, PRICE_DECIMALS) == 10 ** (PRICE_DECIMALS - 6)


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (0.025, 18, 25_000_000_000_000_000),
        (0.1, 18, 100_000_000_000_000_000),  # the decimal 0.1, not the binary 0.1000000000000000055
        (0.66071428575, 18, 660_714_285_750_000_000),
        (1, 18, 10**18),
        (Decimal("2.5"), 0, 2),  # ties go to even
        (Decimal("3.5"), 0, 4),
        (2.5e-18, 18, 2),
        (3.5e-18, 18, 4),
        (1.4999999e-18, 18, 1),
        (-0.025, 18, -25_000_000_000_000_000),
        (12.0250000007, 10, 120_250_000_007),
    ],
)
def test_to_fixed_rounds_the_decimal_value_half_to_even(
    value: float | Decimal, decimals: int, expected: int
):
    assert to_fixed(value, decimals) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, Decimal("NaN")])
def test_to_fixed_refuses_non_finite_values(value: float | Decimal):
    with pytest.raises(ValueError, match="not a finite number"):
        to_fixed(value, 18)


@pytest.mark.parametrize("value", ["1", None, True])
def test_to_fixed_refuses_non_numbers(value: Any):
    with pytest.raises(TypeError):
        to_fixed(value, 18)


def test_round_trip_of_values_with_at_most_18_decimals():
    """Any float written with <= 18 decimals (all gsy-e values we saw) survives exactly."""
    rng = random.Random(5)
    for _ in range(20_000):
        decimals = rng.randint(0, 18)
        digits = rng.randint(1, 17)  # a double's shortest form has at most 17 digits
        mantissa = rng.randrange(10 ** (digits - 1), 10**digits)
        value = float(f"{mantissa}e-{decimals}")
        if value > from_fixed(MAX_AMOUNT, 18):
            continue
        assert from_fixed(to_fixed(value, 18), 18) == value, repr(value)


def test_round_trip_of_gsy_like_prices_and_energies():
    """Energy with up to 6 decimals times a rate with 8 decimals, as gsy-e computes prices.

    Every double of at least 0.01 has at most 18 decimals in its shortest form.
    """
    rng = random.Random(6)
    for _ in range(20_000):
        energy = round(rng.uniform(0.001, 50.0), rng.randint(3, 6))
        rate = round(rng.uniform(10.0, 40.0), 8)
        price = energy * rate  # float noise included, like gsy-e's own values
        for value in (energy, rate, price):
            assert from_fixed(to_fixed(value, ENERGY_DECIMALS), ENERGY_DECIMALS) == value


def test_conversion_error_is_within_half_a_unit_for_any_float():
    rng = random.Random(7)
    for _ in range(20_000):
        value = math.ldexp(rng.random(), rng.randint(-70, 30))
        scaled = to_fixed(value, 18)
        assert abs(Decimal(repr(value)) * 10**18 - scaled) <= Decimal("0.5")
        back = from_fixed(scaled, 18)
        # Back to float: within half a unit of the scale, plus float rounding.
        assert abs(back - value) <= 0.5e-18 + math.ulp(value)


def test_from_fixed_then_to_fixed_is_exact_while_a_double_can_hold_it():
    """A double holds any 15 significant digits, so integers below 10**15 survive."""
    rng = random.Random(8)
    for _ in range(20_000):
        scaled = rng.randrange(0, 10**15)
        assert to_fixed(from_fixed(scaled, 18), 18) == scaled
    assert from_fixed(MAX_AMOUNT, 18) == pytest.approx(79_228_162_514.26434)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.stem)
def test_json_text_and_float_give_the_same_integers(path: Path):
    """The bridge gets floats from gsy-e, the recordings hold text: both must agree."""
    for line in path.read_text().splitlines():
        as_float = json.loads(line)["trade"]
        as_text = json.loads(line, parse_float=Decimal)["trade"]
        for key in ("energy", "price", "fee_price"):
            assert to_fixed(as_float[key], 18) == to_fixed(as_text[key], 18)
            # The integer is the text rounded to 18 decimals: the text itself but for the
            # settlement-market energies with more.
            assert Decimal(to_fixed(as_text[key], 18)).scaleb(-18) == on_scale(as_text[key])


# --- time slots ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-06-21T00:00:00", SLOT_2026_06_21),
        ("2026-06-21 00:00:00+00:00", SLOT_2026_06_21),
        ("2026-06-21T02:00:00+02:00", SLOT_2026_06_21),
        ("2026-06-21T00:15:00", SLOT_2026_06_21 + 900),
        ("1970-01-01T00:00:00", 0),
    ],
)
def test_time_slots_are_unix_seconds_utc(text: str, expected: int):
    assert parse_time_slot(text) == expected


def test_time_slot_formats_back_like_gsy():
    assert format_time_slot(SLOT_2026_06_21 + 900) == "2026-06-21T00:15:00"


# --- bills -----------------------------------------------------------------------------


def _trade(seller: uuid.UUID, buyer: uuid.UUID, energy: int, price: int) -> TradeRecord:
    return TradeRecord(
        trade_id=uuid.uuid4(),
        market=uuid.UUID(int=1),
        time_slot=SLOT_2026_06_21,
        seller=seller,
        buyer=buyer,
        seller_origin=seller,
        buyer_origin=buyer,
        energy=energy,
        price=price,
        fee=7,
    )


def test_buyer_owes_seller_the_price():
    pv, house, area = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = _trade(pv, area, energy=100, price=2500)
    second = _trade(area, house, energy=40, price=1100)
    bills = compute_bills([first, second, first])  # the repeat is skipped, like on chain
    assert bills == {
        pv: Bill(energy_sold=100, energy_bought=0, money_receivable=2500, money_payable=0),
        area: Bill(energy_sold=40, energy_bought=100, money_receivable=1100, money_payable=2500),
        house: Bill(energy_sold=0, energy_bought=40, money_receivable=0, money_payable=1100),
    }
    assert bills[area].as_tuple() == (40, 100, 1100, 2500)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.stem)
def test_bills_of_a_recording_balance(path: Path):
    records = read_recording(path)
    bills = compute_bills(records)
    assert sum(b.energy_sold for b in bills.values()) == sum(r.energy for r in records)
    assert sum(b.energy_bought for b in bills.values()) == sum(r.energy for r in records)
    assert sum(b.money_receivable for b in bills.values()) == sum(r.price for r in records)
    assert sum(b.money_payable for b in bills.values()) == sum(r.price for r in records)


# --- TradeSettled logs -----------------------------------------------------------------


def _log_of(record: TradeRecord) -> dict[str, Any]:
    """A TradeSettled log the way a node returns it, built independently of the decoder."""
    values = record.as_contract_tuple()
    data = abi_encode(
        ["bytes32", "uint64", "bytes32", "bytes32", "uint96", "uint96", "uint96"],
        [values[1], values[2], values[5], values[6], values[7], values[8], values[9]],
    )
    return {
        "topics": [TRADE_SETTLED_TOPIC, values[0], values[3], values[4]],
        "data": "0x" + data.hex(),
    }


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.stem)
def test_logs_decode_back_into_the_records(path: Path):
    records = read_recording(path)
    logs = [_log_of(record) for record in records]
    assert [decode_trade_settled(log) for log in logs] == records
    other = {"topics": [b"\x11" * 32], "data": b""}
    assert decode_trade_settled_logs([other, *logs]) == records


def _other_event(log: dict[str, Any]) -> None:
    log["topics"][0] = b"\x11" * 32


def _non_uuid_id(log: dict[str, Any]) -> None:
    log["topics"][2] = b"\x01" * 32


def _short_data(log: dict[str, Any]) -> None:
    log["data"] = log["data"][:-64]


@pytest.mark.parametrize(("spoil", "message"), [
    (_other_event, "not a TradeSettled event"),
    (_non_uuid_id, "cannot be decoded"),
    (_short_data, "cannot be decoded"),
], ids=["another event", "non-uuid id", "short data"])
def test_a_spoiled_log_is_refused(spoil: Any, message: str):
    log = _log_of(read_recording(RECORDINGS[0])[0])
    spoil(log)
    with pytest.raises(InvalidLog, match=message):
        decode_trade_settled(log)
