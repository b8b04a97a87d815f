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
from pathlib import Path

import pytest
from ingest_fixtures import MeteredChain
from metered_runs import RATES, SettledRun, settle_metered_run
from recordings import DATA

from pilotchain.gsy_export import read_export
from pilotchain.metering import balancing_totals, compute_balancing
from pilotchain.trades import parse_event, uuid_to_bytes32

# House-slots the hook alone (no chain legs) would have charged or credited with honest
# meters, by the reference rules: what reporting every leg fixes.
# (pay-as-clear's 7 legs all lie inside a house: device bills, not meters, were wrong.)
WRONGLY_CHARGED = {"default_2a_two_sided": 109, "pay_as_clear_default_2a_two_sided": 0,
                   "three_levels_two_sided": 120}


def settle_run(target: MeteredChain, redis_url: str, tmp_path: Path, run: str,
               deviations: dict[uuid.UUID, float]) -> SettledRun:
    lines = (DATA / f"{run}.jsonl").read_text().splitlines()
    return settle_metered_run(target, redis_url, tmp_path, DATA / "exports" / run, lines,
                              deviations)


@pytest.mark.parametrize("run", sorted(WRONGLY_CHARGED))
def test_honest_meters_are_never_charged_when_every_leg_is_on_chain(
        run: str, metered: MeteredChain, redis_url: str, tmp_path: Path) -> None:
    settled = settle_run(metered, redis_url, tmp_path, run, {})
    simulation, closed = settled.simulation, settled.closed
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
    settled = settle_run(metered, redis_url, tmp_path, run, {house_1: 1.1})
    simulation, closed = settled.simulation, settled.closed
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
