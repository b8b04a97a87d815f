"""`pilotchain meters simulate` end to end: a recording's trades on chain, throwaway meters
registered and their minute readings over real MQTT through the ingest; closing the slots
gives zero charges without deviations and the reference's charges with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_fixtures import send_calls, send_data, wait_for_work, work_progress
from ingest_fixtures import (
    SLOT,
    IngestThread,
    MeteredChain,
    SubscriberThread,
    dead_letter_reasons,
    ingest_settings,
    pending_count,
    recorded_on_chain,
)
from recordings import RECORDINGS
from web3.logs import DISCARD

from ingest.config import MqttSettings
from pilotchain.chain import Sender
from pilotchain.metering import (
    Rates,
    balancing_totals,
    boundary_energy,
    compute_balancing,
    matching_registers,
)
from pilotchain.settings import PROJECT_ROOT
from pilotchain.settlement import SettlementABI
from pilotchain.trades import read_recording, uuid_to_bytes32
from runner.meters import boundary_participants
from runner.mqtt import MqttService

RECORDING = next(path for path in RECORDINGS if path.name == "default_2a_one_sided.jsonl")
CT = 10**18


@pytest.mark.parametrize("deviate", [False, True], ids=["exact", "deviation"])
def test_simulated_meters_balance_like_the_reference(
        deviate: bool, broker: MqttService, metered: MeteredChain, redis_url: str,
        tmp_path: Path) -> None:
    records = read_recording(RECORDING)
    participants = boundary_participants(records)
    homes = {p: p for p in participants}
    factors = {participants[0]: 1.25} if deviate else {}
    keys = metered.net.keys
    admin = Sender(metered.w3, keys.role("operator").unlock())
    recorder = Sender(metered.w3, keys.role("bridge").unlock())
    contract = metered.contract
    rates = [Rates(0, 40 * CT, 30 * CT, 8 * CT)]
    send_calls(metered.w3, admin, contract,
               ("setCloseDelay", 0), ("setRates", 0, 40 * CT, 30 * CT, 8 * CT))

    connection = broker.connection
    ingest_password = tmp_path / "ingest.password"
    ingest_password.write_text(f"{connection.password}\n")
    # The simulator gives each meter its own account in the broker's accounts file and
    # signals the broker, found as the native stack's under NATIVE_DATA_DIR (the fixture's).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PILOTCHAIN_HOME": str(tmp_path), "KEYS_DIR": str(metered.net.settings.keys_dir),
           "RPC_URL": metered.net.rpc_url, "DEPLOYMENT_FILE": str(metered.record),
           "NATIVE_DATA_DIR": str(tmp_path / "data"), "MQTT_PORT": str(connection.port),
           "MQTT_PASSWORD_FILE": str(ingest_password),
           "MQTT_METER_ACCOUNTS_FILE": str(connection.meter_accounts)}
    argv = [sys.executable, "-m", "runner.cli", "meters", "simulate", str(RECORDING),
            "--keys-file", str(tmp_path / "meters.json")]
    argv += [f"--deviation={p}={f}" for p, f in factors.items()]
    settings = MqttSettings(mqtt=connection, redis_url=redis_url,
                            stream="test:readings")
    writer = ingest_settings(metered, redis_url)
    slots = sorted({r.time_slot for r in records})
    every_slot = list(range(slots[0], slots[-1] + SLOT, SLOT))
    with SubscriberThread(settings), IngestThread(writer) as metrics:
        result = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr
        assert "Simulated 2 meters over 67 slots" in result.stdout
        boundaries = len(participants) * (len(every_slot) + 1)
        wait_for_work(metered.net, lambda: (sum(recorded_on_chain(metered).values()) == boundaries
                                            and pending_count(redis_url, writer.group) == 0)
                      or None, progress=work_progress(metrics),
                      what=f"{boundaries} boundary readings on chain")
    # The trades after the meters: the contract counts a participant's boundary energy from
    # the trades recorded once it is metered (as in a pilot, where meters come first).
    encode = SettlementABI(contract.abi).record_trades
    send_data(metered.w3, recorder, contract.address,
              *(("recordTrades", encode(records[start:start + 200]))
                for start in range(0, len(records), 200)))
    assert dead_letter_reasons(redis_url) == []
    keys = json.loads((tmp_path / "meters.json").read_text())
    assert keys["throwaway"] is True
    # Each meter published with an account of its own, named by its id.
    assert {m["mqtt_account"] for m in keys["meters"]} == {m["meter"] for m in keys["meters"]}
    assert len({m["mqtt_password"] for m in keys["meters"]}) == len(keys["meters"])

    # The registers on chain are the reference's: slot energy = traded x factor.
    registers = matching_registers(boundary_energy(records, homes), slots, factors)
    functions = contract.functions
    for participant in participants:
        (meter,) = functions.metersOf(uuid_to_bytes32(participant)).call()
        on_chain = {t: tuple(functions.readingOf(meter, t).call()[1:3])
                    for t in registers[participant]}
        assert on_chain == registers[participant]

    pairs = [(p, slot) for p in participants for slot in every_slot]
    chunks = [pairs[start:start + 60] for start in range(0, len(pairs), 60)]
    receipts = send_calls(metered.w3, admin, contract, *(
        ("closeSlots", [uuid_to_bytes32(p) for p, _ in chunk], [slot for _, slot in chunk])
        for chunk in chunks))
    closed = [dict(event["args"]) for receipt in receipts for event in
              contract.events.SlotBalanced().process_receipt(receipt, errors=DISCARD)]
    assert len(closed) == len(pairs)
    reference = compute_balancing(records, homes, registers, rates, pairs)
    assert [(e["shortfallCharge"], e["excessCharge"], e["surplusCredit"]) for e in closed] == \
        [(b.shortfall_charge, b.excess_charge, b.surplus_credit) for b in reference]
    per_participant, _ = balancing_totals(reference)
    if deviate:
        assert per_participant[participants[0]].charges + \
            per_participant[participants[0]].credits > 0
        assert per_participant[participants[1]].charges == 0
    else:
        assert all(b.charges == 0 and b.surplus_credit == 0 for b in reference)
    for participant, totals in per_participant.items():
        assert functions.balancingOf(uuid_to_bytes32(participant)).call() == [
            totals.charges, totals.credits]
