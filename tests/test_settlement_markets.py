"""A real gsy-e run with settlement markets (data/settlement_default_2a_two_sided.jsonl) on
the real chain: the houses metered first (``runner.meters.simulate`` from gsy-e's own export
of the run, so the meters read what gsy-e booked across each house's connection, readings
through the ingest), then every trade through the bridge. Each trade lands once, and every
closed slot counts the settlement-market trades of that slot in the house's boundary energy."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge_fixtures import (
    BridgeThread,
    Deployed,
    bridge_settings,
    duplicates,
    mined,
    publish_lines,
    read_lines,
    settled_on_chain,
    wait_for_work,
    work_progress,
)
from ingest_fixtures import (
    SLOT,
    IngestThread,
    MeteredChain,
    ingest_settings,
    pending_count,
    publish_readings,
    recorded_on_chain,
)
from recordings import DATA, SETTLEMENT_RECORDING, market_kind
from web3.logs import DISCARD

from pilotchain.chain import Sender
from pilotchain.metering import Rates, SignedReading, boundary_energy, compute_balancing
from pilotchain.trades import TradeRecord, parse_event, uuid_to_bytes32
from runner.meters import SimulatedMeter, boundary_participants, simulate

CT = 10**18
RATES = Rates(0, 40 * CT, 30 * CT, 8 * CT)


def send(target: MeteredChain, sender: Sender, data: Any) -> Any:
    receipt = mined(target.w3, sender.send({"to": target.contract.address, "data": data}))
    assert receipt["status"] == 1
    return receipt


def crosses_a_meter(record: TradeRecord, homes: dict[uuid.UUID, uuid.UUID]) -> bool:
    """A metered party trades outside its home area (the rule of boundary_energy)."""
    return any(party in homes and record.market != homes[party]
               for party in (record.seller, record.buyer))


def test_settlement_market_trades_count_for_the_slot_they_settle(
        metered: MeteredChain, redis_url: str, tmp_path: Path) -> None:
    lines = read_lines([SETTLEMENT_RECORDING])
    events = [json.loads(line) for line in lines]
    records = [parse_event(event) for event in events]
    kind = {record.trade_id: market_kind(event["trade"])
            for record, event in zip(records, events, strict=True)}
    participants = boundary_participants(records)
    homes = {p: p for p in participants}

    # What the recording holds: settlement-market trades, 40 of them across a meter.
    assert Counter(kind.values()) == Counter(spot=315, settlement=99, future=83)
    settlement = [r for r in records if kind[r.trade_id] == "settlement"]
    crossing = [r for r in settlement if crosses_a_meter(r, homes)]
    assert len(participants) == 2 and len(crossing) == 40
    expected = boundary_energy(records, homes)
    from_settlement = boundary_energy(settlement, homes)
    from_others = boundary_energy([r for r in records if kind[r.trade_id] != "settlement"],
                                  homes)
    assert len(from_settlement) == 38  # (house, slot) pairs; a trade between houses counts twice

    keys = metered.net.keys
    admin = Sender(metered.w3, keys.role("operator").unlock())
    contract = metered.contract
    send(metered, admin, contract.encode_abi("setCloseDelay", args=[0]))
    send(metered, admin, contract.encode_abi("setRates", args=[
        RATES.from_slot, RATES.shortfall, RATES.grid_supply, RATES.feed_in]))

    # Meters first: the contract counts boundary energy from trades recorded once metered.
    # They read what crossed each house (spot, future and settlement trades alike).
    def publish(batch: list[tuple[SimulatedMeter, SignedReading]]) -> None:
        publish_readings(redis_url, [signed for _, signed in batch])

    chain_settings = replace(metered.net.settings, rpc_url_override=metered.net.rpc_url,
                             deployment_file_override=metered.record)
    writer = ingest_settings(metered, redis_url)
    with IngestThread(writer) as ingest:
        simulation = simulate(DATA / "exports" / SETTLEMENT_RECORDING.stem, chain_settings,
                              rpc_url=metered.net.rpc_url, deviations={}, publish=publish,
                              keys_file=tmp_path / "meters.json")
        wait_for_work(metered.net, lambda: (sum(recorded_on_chain(metered).values())
                                      == simulation.boundary_readings
                                      and pending_count(redis_url, writer.group) == 0) or None,
                      progress=work_progress(ingest),
                      what=f"{simulation.boundary_readings} boundary readings on chain")

    deployed = Deployed(metered.net, metered.record, metered.deployment)
    publish_lines(redis_url, lines)
    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == len(lines),
                      progress=work_progress(metrics),
                      what=f"the bridge to settle all {len(lines)} trades of the settlement run")
        assert metrics.get("dead_lettered") == 0
    on_chain = settled_on_chain(deployed)
    assert duplicates(on_chain) == {}
    assert sorted(r.trade_id for r in on_chain) == sorted(r.trade_id for r in records)
    assert {r.trade_id: r for r in on_chain} == {r.trade_id: r for r in records}

    every_slot = range(min(simulation.slots), max(simulation.slots) + SLOT, SLOT)
    pairs = [(p, slot) for p in participants for slot in every_slot]
    closed: dict[tuple[uuid.UUID, int], dict[str, Any]] = {}
    for start in range(0, len(pairs), 60):
        chunk = pairs[start:start + 60]
        receipt = send(metered, admin, contract.encode_abi("closeSlots", args=[
            [uuid_to_bytes32(p) for p, _ in chunk], [slot for _, slot in chunk]]))
        for event in contract.events.SlotBalanced().process_receipt(receipt, errors=DISCARD):
            args = dict(event["args"])
            participant = uuid.UUID(bytes=bytes(args["participant"])[16:])
            closed[(participant, int(args["slot"]))] = args
    assert set(closed) == set(pairs)

    # Each slot's boundary energy on chain is the recording's, settlement trades included.
    counted = {pair: (e["sold"], e["bought"]) for pair, e in closed.items()}
    assert counted == {pair: expected.get(pair, (0, 0)) for pair in pairs}
    for pair, (sold, bought) in from_settlement.items():
        assert sold + bought > 0
        other_sold, other_bought = from_others.get(pair, (0, 0))
        assert counted[pair] == (other_sold + sold, other_bought + bought), pair

    # Meters reading what crossed balance to zero; had the settlement trades not counted for
    # their slot, the same readings would have been charged.
    reference = compute_balancing(records, homes, simulation.registers, [RATES], pairs)
    assert [(b.shortfall_charge, b.excess_charge, b.surplus_credit) for b in reference] == \
        [(closed[(b.participant, b.slot)]["shortfallCharge"],
          closed[(b.participant, b.slot)]["excessCharge"],
          closed[(b.participant, b.slot)]["surplusCredit"]) for b in reference]
    assert all(b.charges == 0 and b.surplus_credit == 0 for b in reference)
    without = compute_balancing([r for r in records if kind[r.trade_id] != "settlement"],
                                homes, simulation.registers, [RATES], pairs)
    assert sum(1 for b in without if b.charges or b.surplus_credit) > 0
    # Nor had the chain legs of forwarded bids been missing, as gsy-e's hook alone left them
    # (trades without an offer): 95 house-slots charged or credited with honest meters.
    reported = [r for r, e in zip(records, events, strict=True)
                if e["trade"].get("offer") is not None]
    assert len(records) - len(reported) == 166
    without_legs = compute_balancing(reported, homes, simulation.registers, [RATES], pairs)
    assert sum(1 for b in without_legs if b.charges or b.surplus_credit) == 95
