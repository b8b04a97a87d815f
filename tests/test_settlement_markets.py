"""A real gsy-e run with settlement markets (data/settlement_default_2a_two_sided.jsonl) on
the real chain: the houses metered first (``runner.meters.simulate`` from gsy-e's own export
of the run, so the meters read what gsy-e booked across each house's connection, readings
through the ingest), then every trade through the bridge. Each trade lands once, and every
closed slot counts the settlement-market trades of that slot in the house's boundary energy."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

from bridge_fixtures import Deployed, duplicates, read_lines, settled_on_chain
from ingest_fixtures import MeteredChain
from metered_runs import RATES, settle_metered_run
from recordings import DATA, SETTLEMENT_RECORDING, market_kind

from pilotchain.metering import boundary_energy, compute_balancing
from pilotchain.trades import TradeRecord, parse_event
from runner.meters import boundary_participants


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

    # The meters read what crossed each house (spot, future and settlement trades alike).
    settled = settle_metered_run(metered, redis_url, tmp_path,
                                 DATA / "exports" / SETTLEMENT_RECORDING.stem, lines, {})
    simulation, closed = settled.simulation, settled.closed
    pairs = sorted(closed)
    deployed = Deployed(metered.net, metered.record, metered.deployment)
    on_chain = settled_on_chain(deployed)
    assert duplicates(on_chain) == {}
    assert {r.trade_id: r for r in on_chain} == {r.trade_id: r for r in records}

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
