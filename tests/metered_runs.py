"""A recorded gsy-e run settled on a metered chain, as the every-leg and settlement-market
tests need it: meters simulated from gsy-e's own export of the run (their readings through the
real ingest), then the run's recording through the real bridge, then every slot of every
metered house closed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bridge_fixtures import (
    BridgeThread,
    Deployed,
    bridge_settings,
    publish_lines,
    send_calls,
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
from web3.logs import DISCARD

from pilotchain.chain import Sender
from pilotchain.metering import Rates, SignedReading
from pilotchain.trades import uuid_to_bytes32
from runner.meters import SimulatedMeter, Simulation, simulate

CT = 10**18
RATES = Rates(0, 40 * CT, 30 * CT, 8 * CT)
# closeSlots calls of this many (participant, slot) pairs each: well inside a block's gas.
CLOSE_CHUNK = 60


class StreamPublisher:
    """The simulated meters' readings straight onto the ingest's stream (what the MQTT
    subscriber and the HTTP door would put there): no broker, so no accounts to admit."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def admit(self, meters: Sequence[SimulatedMeter]) -> dict[bytes, str]:
        return {}

    def __call__(self, batch: Sequence[tuple[SimulatedMeter, SignedReading]]) -> None:
        publish_readings(self.redis_url, [signed for _, signed in batch])


@dataclass(frozen=True)
class SettledRun:
    simulation: Simulation
    # Each closed (participant, slot): its SlotBalanced event's arguments.
    closed: dict[tuple[uuid.UUID, int], dict[str, Any]]


def settle_metered_run(target: MeteredChain, redis_url: str, tmp_path: Path, export: Path,
                       lines: list[str], deviations: dict[uuid.UUID, float]) -> SettledRun:
    """Meters from ``export`` on chain, then ``lines`` (the run's recording) through the
    bridge, each trade once, then every slot of every metered house closed (none
    unmetered)."""
    admin = Sender(target.w3, target.net.keys.role("operator").unlock())
    contract = target.contract
    send_calls(target.w3, admin, contract,
               ("setCloseDelay", 0),
               ("setRates", RATES.from_slot, RATES.shortfall, RATES.grid_supply, RATES.feed_in))

    # Meters first: the contract counts boundary energy from trades recorded once metered.
    chain_settings = replace(target.net.settings, rpc_url_override=target.net.rpc_url,
                             deployment_file_override=target.record)
    writer = ingest_settings(target, redis_url)
    with IngestThread(writer) as ingest:
        simulation = simulate(export, chain_settings, rpc_url=target.net.rpc_url,
                              deviations=deviations, publish=StreamPublisher(redis_url),
                              keys_file=tmp_path / "meters.json")
        wait_for_work(target.net, lambda: (sum(recorded_on_chain(target).values())
                                           == simulation.boundary_readings
                                           and pending_count(redis_url, writer.group) == 0)
                      or None, progress=work_progress(ingest),
                      what=f"{simulation.boundary_readings} boundary readings on chain")

    deployed = Deployed(target.net, target.record, target.deployment)
    publish_lines(redis_url, lines)
    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == len(lines),
                      progress=work_progress(metrics),
                      what=f"the bridge to settle all {len(lines)} trades of {export.name}")
        assert metrics.get("dead_lettered") == 0
    assert len(settled_on_chain(deployed)) == len(lines)

    participants = sorted({meter.participant for meter in simulation.meters}, key=str)
    every_slot = range(min(simulation.slots), max(simulation.slots) + SLOT, SLOT)
    pairs = [(p, slot) for p in participants for slot in every_slot]
    closed: dict[tuple[uuid.UUID, int], dict[str, Any]] = {}
    chunks = [pairs[start:start + CLOSE_CHUNK] for start in range(0, len(pairs), CLOSE_CHUNK)]
    receipts = send_calls(target.w3, admin, contract, *(
        ("closeSlots", [uuid_to_bytes32(p) for p, _ in chunk], [slot for _, slot in chunk])
        for chunk in chunks))
    for receipt in receipts:
        for event in contract.events.SlotBalanced().process_receipt(receipt, errors=DISCARD):
            args = dict(event["args"])
            closed[(uuid.UUID(bytes=bytes(args["participant"])[16:]), int(args["slot"]))] = args
    assert set(closed) == set(pairs), "every slot of every house balanced, none unmetered"
    return SettledRun(simulation, closed)
