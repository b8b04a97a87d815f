"""`pilotchain audit` on the real chain: a faithful Settlement passes, with trades alone and
with meters, readings with deviations, closed slots and periods; a Settlement with real bugs
compiled in (a seller credited one unit too much, a wrong record block; excess charged at the
shortfall rate, the operator's side off by one) is caught, each difference named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge_fixtures import Deployed, send, send_calls, send_data
from eth_account import Account
from ingest_fixtures import MeteredChain
from recordings import DATA

from pilotchain.audit import audit
from pilotchain.chain import Sender, connect
from pilotchain.contract import (
    compile_settlement,
    deploy_settlement,
    save_deployment,
    settlement_contract,
)
from pilotchain.metering import (
    WH,
    Domain,
    MeterReading,
    boundary_energy,
    matching_registers,
    meter_id,
    sign_reading,
)
from pilotchain.settings import PROJECT_ROOT
from pilotchain.settlement import Settlement, SettlementABI
from pilotchain.trades import TradeRecord, format_time_slot, read_recording, uuid_to_bytes32
from runner.localnet import LocalNetwork
from runner.meters import SimulatedMeter, boundary_participants, register_meters

RECORDINGS = ("default_2a_one_sided.jsonl", "default_3_one_sided.jsonl")
SLOT = 900
CT = 10**18


def record(net: LocalNetwork, contract: str, abi: list[dict[str, object]],
           *batches: list[TradeRecord]) -> None:
    """Each batch in a recordTrades of its own by the bridge's key, sent back to back (so
    recorded in this order) and all awaited."""
    w3 = connect(net.rpc_url)
    sender = Sender(w3, net.keys.role("bridge").unlock())
    send_data(w3, sender, contract, *(("recordTrades", SettlementABI(abi).record_trades(batch))
                                      for batch in batches))


def run_audit(net: LocalNetwork, record_file: Path) -> subprocess.CompletedProcess[str]:
    """``pilotchain audit`` as a user runs it."""
    env = {**os.environ, "RPC_URL": net.rpc_url, "CHAIN_ID": str(net.settings.chain_id),
           "DEPLOYMENT_FILE": str(record_file)}
    return subprocess.run([sys.executable, "-m", "runner.cli", "audit"], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
                          check=False)


def test_the_audit_of_a_faithful_settlement_finds_nothing(deployed: Deployed) -> None:
    net, deployment = deployed.net, deployed.deployment
    abi = compile_settlement().abi
    batches = [read_recording(DATA / name) for name in RECORDINGS]
    record(net, deployment.address, abi, *batches, batches[0])  # the last: every trade skipped
    result = run_audit(net, deployed.record)
    assert result.returncode == 0, result.stdout + result.stderr
    trades = sum(len(batch) for batch in batches)
    assert f": {trades} trades in 3 batches," in result.stdout
    assert "The books hold" in result.stdout and "DIFFERENCE" not in result.stdout


def faulty_settlement(tmp_path: Path, bugs: Mapping[str, str] | None = None) -> Path:
    """A copy of the project whose Settlement has real bugs compiled in (by default, two in
    recording trades)."""
    project = tmp_path / "faulty"
    (project / "contracts").mkdir(parents=True)
    for name in ("node_modules", "scripts"):
        (project / name).symlink_to(PROJECT_ROOT / name)
    shutil.copy(PROJECT_ROOT / "package.json", project / "package.json")
    source = (PROJECT_ROOT / "contracts" / "Settlement.sol").read_text()
    bugs = bugs or {
        "_addTo(_selling, _sellingAt, trade.seller, trade.energy, trade.price, periods)":
            "_addTo(_selling, _sellingAt, trade.seller, trade.energy, trade.price + 1, periods)",
        "_recordedIn[tradeId] = block.number;": "_recordedIn[tradeId] = block.number + 1;",
    }
    for right, wrong in bugs.items():
        assert right in source, f"the contract no longer has {right!r}"
        source = source.replace(right, wrong)
    (project / "contracts" / "Settlement.sol").write_text(source)
    return project


def test_the_audit_names_every_difference_of_a_faulty_settlement(
        chain: LocalNetwork, tmp_path: Path) -> None:
    project = faulty_settlement(tmp_path)
    compiled = compile_settlement(tmp_path / "build", project_root=project)
    w3 = connect(chain.rpc_url)
    deployment = deploy_settlement(w3, chain.keys.role("operator").unlock(),
                                   chain.keys.role("bridge").address, compiled=compiled)
    save_deployment(deployment, tmp_path / "settlement.json")
    records = read_recording(DATA / RECORDINGS[1])
    record(chain, deployment.address, compiled.abi, records)

    report = audit(w3, chain.rpc_url, deployment)
    assert not report.ok
    kinds = [finding.kind for finding in report.findings]
    sellers = {r.seller for r in records}
    assert kinds.count("record block") == len(records)
    assert kinds.count("bill") == len(sellers)
    assert kinds.count("books") == 1
    books = next(f for f in report.findings if f.kind == "books")
    assert "differs from money payable" in books.detail


def signed_boundary_readings(meter: SimulatedMeter, registers: Mapping[int, tuple[int, int]],
                             domain: Any, skip: int | None = None) -> list[tuple[Any, ...]]:
    """The meter's boundary readings (no minutes before them), ``skip`` left out."""
    return [sign_reading(MeterReading(meter.meter, time, *registers[time]), meter.key,
                         domain).as_contract_tuple()
            for time in sorted(registers) if time != skip]


def test_the_audit_of_a_faithful_metered_settlement_finds_nothing(
        metered: MeteredChain) -> None:
    """Three houses metered: one exports a quarter more than it sold (surplus), one a fifth
    less (shortfall), the buyer imports a quarter more than it bought (excess); a missing
    reading and a slot beyond the readings close unmetered; rates change once, some trades
    come before the meters and some after their slot closed, two periods close."""
    w3, contract, keys = metered.w3, metered.contract, metered.net.keys
    admin = Sender(w3, keys.role("operator").unlock())
    reader = Sender(w3, keys.role("ingest").unlock())
    records = [r for name in RECORDINGS for r in read_recording(DATA / name)]
    slots = sorted({r.time_slot for r in records})
    every_slot = list(range(slots[0], slots[-1] + SLOT, SLOT))
    sellers, (buyer,) = (boundary_participants(read_recording(DATA / name))
                         for name in RECORDINGS)
    houses = [*sellers, buyer]
    factors = {sellers[0]: 1.25, sellers[1]: 0.8, buyer: 1.25}
    split = slots[0] + 50 * SLOT  # period 1 ends here; rates change here
    held = [r for r in records if r.time_slot == split - SLOT and buyer in (r.seller, r.buyer)
            and r.market != buyer]  # across the buyer's meter
    early = records[:10]
    assert held and not set(held) & set(early)

    send_calls(w3, admin, contract,
               ("setCloseDelay", 0),
               ("setRates", slots[0], 40 * CT, 30 * CT, 8 * CT),
               ("setRates", split, 50 * CT, 35 * CT, 10 * CT))
    record(metered.net, contract.address, contract.abi, early)  # before the meters: not counted
    meters = [SimulatedMeter(h, meter_id(uuid.uuid4()), Account.create(), factors[h])
              for h in houses]
    register_meters(w3, metered.net.rpc_url, Settlement(w3, metered.net.rpc_url, contract.address,
                                                       SettlementABI(contract.abi)), keys, meters)
    rest = [r for r in records[10:] if r not in held]
    record(metered.net, contract.address, contract.abi,
           *(rest[start:start + 150] for start in range(0, len(rest), 150)))

    registers = matching_registers(boundary_energy(records, {h: h for h in houses}), slots,
                                   factors)
    missing = split + 5 * SLOT  # the buyer's reading here is lost: two slots unmetered
    readings = [reading for m in meters for reading in signed_boundary_readings(
        m, registers[m.participant], metered.domain, missing if m.participant == buyer else None)]
    send_calls(w3, reader, contract, *(("submitReadings", readings[start:start + 40])
                                       for start in range(0, len(readings), 40)))

    pairs = [(h, slot) for h in houses for slot in every_slot]
    pairs.append((sellers[0], every_slot[-1] + 3 * SLOT))  # no readings this late: unmetered
    first = [pair for pair in pairs if pair[1] < split]
    second = [pair for pair in pairs if pair[1] >= split]

    def close(part: list[tuple[uuid.UUID, int]]) -> list[tuple[Any, ...]]:
        return [("closeSlots", [uuid_to_bytes32(h) for h, _ in chunk],
                 [slot for _, slot in chunk])
                for chunk in (part[start:start + 60] for start in range(0, len(part), 60))]

    # The operator's calls in two batches, the held trades recorded between them: after
    # their slot closed, before the second period's close.
    send_calls(w3, admin, contract, *close(first), ("closePeriod", split))
    record(metered.net, contract.address, contract.abi, held)
    send_calls(w3, admin, contract, *close(second),
               ("closePeriod", every_slot[-1] + 4 * SLOT),
               ("markPaid", 1, uuid_to_bytes32(buyer)))

    # The faithful contract's own events show every kind of deviation, priced.
    logs = contract.events.SlotBalanced().get_logs(from_block=metered.deployment.block_number)
    for name in ("shortfallCharge", "excessCharge", "surplusCredit"):
        assert any(log["args"][name] > 0 for log in logs), name
    late = contract.events.BoundaryTradeAfterClose().get_logs(
        from_block=metered.deployment.block_number)
    assert {log["args"]["tradeId"] for log in late} == {uuid_to_bytes32(r.trade_id)
                                                       for r in held}

    result = run_audit(metered.net, metered.record)
    assert result.returncode == 0, result.stdout + result.stderr
    boundaries = len(houses) * (len(every_slot) + 1) - 1
    balanced = len(houses) * len(every_slot) - 2
    traders = len({party for r in records for party in (r.seller, r.buyer)})
    assert (f": {len(records)} trades in 4 batches, {traders} participants; 3 meters, "
            f"{boundaries} readings, {balanced} slots balanced, 3 unmetered, 2 periods "
            "closed.") in result.stdout, result.stdout
    assert "The books hold" in result.stdout and "DIFFERENCE" not in result.stdout


def faulty_metering(tmp_path: Path) -> Path:
    """A Settlement that charges excess at the shortfall rate and books the operator's side
    of every charge one unit too high."""
    return faulty_settlement(tmp_path, {
        "balance.excessCharge = (balance.importEnergy - balance.bought) * gridSupplyRate":
            "balance.excessCharge = (balance.importEnergy - balance.bought) * shortfallRate",
        "_addTo(_balancing, _balancingAt, OPERATOR, credits, charges, periods);":
            "_addTo(_balancing, _balancingAt, OPERATOR, credits, charges + 1, periods);",
    })


def test_the_audit_names_every_balancing_difference_of_a_faulty_settlement(
        chain: LocalNetwork, tmp_path: Path) -> None:
    compiled = compile_settlement(tmp_path / "build", project_root=faulty_metering(tmp_path))
    w3 = connect(chain.rpc_url)
    operator = chain.keys.role("operator").unlock()
    deployment = deploy_settlement(w3, operator, chain.keys.role("bridge").address,
                                   reader=operator.address, compiled=compiled)
    contract = settlement_contract(w3, deployment)
    admin, recorder = Sender(w3, operator), Sender(w3, chain.keys.role("bridge").unlock())
    house, market, seller = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    meter_key, meter = Account.create(), meter_id(uuid.uuid4())
    pid = uuid_to_bytes32(house)
    send_calls(w3, admin, contract,
               ("registerMeter", meter, meter_key.address, pid, pid),
               ("setCloseDelay", 0),
               ("setRates", 0, 40 * CT, 30 * CT, 0))
    head = w3.eth.get_block("latest")["timestamp"]
    slot = head // SLOT * SLOT - 2 * SLOT
    purchase = TradeRecord(uuid.uuid4(), market, slot, seller, house, seller, house, 6 * WH,
                           CT, 0)
    send(w3, recorder, contract, "recordTrades", [purchase.as_contract_tuple()])
    domain = Domain(w3.eth.chain_id, contract.address)
    readings = [sign_reading(MeterReading(meter, t, i, 500), meter_key, domain)
                for t, i in ((slot, 1000), (slot + SLOT, 1009))]
    send_calls(w3, admin, contract,
               ("submitReadings", [r.as_contract_tuple() for r in readings]),
               ("closeSlots", [pid], [slot]))

    report = audit(w3, chain.rpc_url, deployment)
    kinds = sorted(finding.kind for finding in report.findings)
    assert kinds == ["balancing", "balancing", "books", "slot balance"], report.findings
    details = {finding.kind: finding.detail for finding in report.findings}
    assert str(house) in details["slot balance"]
    assert f"slot {format_time_slot(slot)} UTC" in details["slot balance"]
    assert f"excess charge {3 * WH * 30}, SlotBalanced says {3 * WH * 40}" in \
        details["slot balance"]
    balancing = [f.detail for f in report.findings if f.kind == "balancing"]
    assert any(str(house) in d and f"balancingOf gives charges {3 * WH * 40}" in d
               for d in balancing), balancing
    assert any("grid operator" in d and f"credits {3 * WH * 30}, balancingOf gives charges 0 "
               f"and credits {3 * WH * 40 + 1}" in d for d in balancing), balancing
    assert f"balancing credits {3 * WH * 40 + 1}" in details["books"]
    assert f"balancing charges {3 * WH * 40})" in details["books"]
