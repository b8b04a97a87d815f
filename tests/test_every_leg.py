"""Every leg on chain, measured where it matters: honest meters are never charged.

For each two-sided gsy-e run of tests/data (pay-as-bid, pay-as-clear, a three-level grid
whose bids travel two hops; the settlement run is test_settlement_markets.py), meters are
simulated from gsy-e's own export of the run, so they read what gsy-e booked across each
house's connection, every leg included, whatever reached the ledger. Their readings go on the
real chain through the ingest, the plug-in's recording through the real bridge, and every
slot is closed: no house pays or is credited anything. The same readings against the trades
gsy-e's hook alone reported (no chain legs) would have charged houses that did nothing wrong:
the reference rules, which the contract follows to the wei (test_metering_contract.py),
count them. With one chosen deviation, the contract charges exactly what the rules say.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bridge_fixtures import (
    BridgeThread,
    Deployed,
    bridge_settings,
    mined,
    publish_lines,
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
from recordings import DATA
from web3.logs import DISCARD

from pilotchain.chain import Sender
from pilotchain.gsy_export import read_export
from pilotchain.metering import Rates, SignedReading, balancing_totals, compute_balancing
from pilotchain.trades import parse_event, uuid_to_bytes32
from runner.meters import SimulatedMeter, simulate

CT = 10**18
RATES = Rates(0, 40 * CT, 30 * CT, 8 * CT)
# House-slots the hook alone (no chain legs) would have charged or credited with honest
# meters, by the reference rules: what reporting every leg fixes.
# (pay-as-clear's 7 legs all lie inside a house: device bills, not meters, were wrong.)
WRONGLY_CHARGED = {"default_2a_two_sided": 109, "pay_as_clear_default_2a_two_sided": 0,
                   "three_levels_two_sided": 120}


def send(target: MeteredChain, sender: Sender, data: Any) -> Any:
    receipt = mined(target.w3, sender.send({"to": target.contract.address, "data": data}))
    assert receipt["status"] == 1
    return receipt


def settle_metered_run(target: MeteredChain, redis_url: str, tmp_path: Path, run: str,
                       deviations: dict[uuid.UUID, float]) -> tuple[Any, dict[Any, Any]]:
    """Meters from the run's export on chain, then the run's recording through the bridge,
    then every slot closed; returns the simulation and each closed slot's SlotBalanced."""
    keys = target.net.keys
    admin = Sender(target.w3, keys.role("operator").unlock())
    contract = target.contract
    send(target, admin, contract.encode_abi("setCloseDelay", args=[0]))
    send(target, admin, contract.encode_abi("setRates", args=[
        RATES.from_slot, RATES.shortfall, RATES.grid_supply, RATES.feed_in]))

    def publish(batch: list[tuple[SimulatedMeter, SignedReading]]) -> None:
        publish_readings(redis_url, [signed for _, signed in batch])

    chain_settings = replace(target.net.settings, rpc_url_override=target.net.rpc_url,
                             deployment_file_override=target.record)
    writer = ingest_settings(target, redis_url)
    with IngestThread(writer) as ingest:
        simulation = simulate(DATA / "exports" / run, chain_settings,
                              rpc_url=target.net.rpc_url, deviations=deviations,
                              publish=publish, keys_file=tmp_path / "meters.json")
        wait_for_work(target.net, lambda: (sum(recorded_on_chain(target).values())
                                      == simulation.boundary_readings
                                      and pending_count(redis_url, writer.group) == 0) or None,
                      progress=work_progress(ingest),
                      what=f"{simulation.boundary_readings} boundary readings on chain")

    lines = (DATA / f"{run}.jsonl").read_text().splitlines()
    deployed = Deployed(target.net, target.record, target.deployment)
    publish_lines(redis_url, lines)
    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == len(lines),
                      progress=work_progress(metrics),
                      what=f"the bridge to settle all {len(lines)} trades of {run}")
    assert len(settled_on_chain(deployed)) == len(lines)

    participants = sorted({meter.participant for meter in simulation.meters}, key=str)
    every_slot = range(min(simulation.slots), max(simulation.slots) + SLOT, SLOT)
    pairs = [(p, slot) for p in participants for slot in every_slot]
    closed: dict[tuple[uuid.UUID, int], dict[str, Any]] = {}
    for start in range(0, len(pairs), 60):
        chunk = pairs[start:start + 60]
        receipt = send(target, admin, contract.encode_abi("closeSlots", args=[
            [uuid_to_bytes32(p) for p, _ in chunk], [slot for _, slot in chunk]]))
        for event in contract.events.SlotBalanced().process_receipt(receipt, errors=DISCARD):
            args = dict(event["args"])
            closed[(uuid.UUID(bytes=bytes(args["participant"])[16:]), int(args["slot"]))] = args
    assert set(closed) == set(pairs), "every slot of every house balanced, none unmetered"
    return simulation, closed


@pytest.mark.parametrize("run", sorted(WRONGLY_CHARGED))
def test_honest_meters_are_never_charged_when_every_leg_is_on_chain(
        run: str, metered: MeteredChain, redis_url: str, tmp_path: Path) -> None:
    simulation, closed = settle_metered_run(metered, redis_url, tmp_path, run, {})
    charged = {pair: (e["shortfallCharge"], e["excessCharge"], e["surplusCredit"])
               for pair, e in closed.items() if e["shortfallCharge"] or e["excessCharge"]
               or e["surplusCredit"]}
    assert charged == {}, f"{len(charged)} house-slots charged with honest meters"
    for meter in simulation.meters:
        assert metered.contract.functions.balancingOf(
            uuid_to_bytes32(meter.participant)).call() == [0, 0]

    # The same readings against the chain as it was (only the trades gsy-e's hook reported).
    events = [json.loads(line) for line in (DATA / f"{run}.jsonl").read_text().splitlines()]
    reported = [parse_event(e) for e in events if e["trade"].get("offer") is not None]
    homes = {meter.participant: meter.participant for meter in simulation.meters}
    without_legs = compute_balancing(reported, homes, simulation.registers, [RATES],
                                     sorted(closed))
    wrong = [b for b in without_legs if b.charges or b.surplus_credit]
    assert len(wrong) == WRONGLY_CHARGED[run]


def test_one_chosen_deviation_is_charged_exactly(
        metered: MeteredChain, redis_url: str, tmp_path: Path) -> None:
    run = "three_levels_two_sided"
    records = read_export(DATA / "exports" / run).records()
    house_1 = next(area.uuid for area in read_export(DATA / "exports" / run).areas.values()
                   if area.name == "House 1")
    simulation, closed = settle_metered_run(metered, redis_url, tmp_path, run,
                                            {house_1: 1.1})
    homes = {meter.participant: meter.participant for meter in simulation.meters}
    reference = compute_balancing(records, homes, simulation.registers, [RATES], sorted(closed))
    assert [(closed[(b.participant, b.slot)]["shortfallCharge"],
             closed[(b.participant, b.slot)]["excessCharge"],
             closed[(b.participant, b.slot)]["surplusCredit"]) for b in reference] == \
        [(b.shortfall_charge, b.excess_charge, b.surplus_credit) for b in reference]
    per_participant, _ = balancing_totals(reference)
    assert per_participant[house_1].charges + per_participant[house_1].credits > 0
    others = [p for p in homes if p != house_1]
    assert others and all(per_participant.get(p) is None or (
        per_participant[p].charges == 0 and per_participant[p].credits == 0) for p in others)
    assert metered.contract.functions.balancingOf(uuid_to_bytes32(house_1)).call() == [
        per_participant[house_1].charges, per_participant[house_1].credits]
