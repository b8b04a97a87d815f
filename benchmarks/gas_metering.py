"""Gas of metering: trades of metered and unmetered parties, readings and closed slots,
against the gas per trade of the Settlement contract before metering, in the same run.

    .venv/bin/python benchmarks/gas_metering.py [--baseline-rev main]

Both contracts run on an in-process London EVM (eth-tester): the baseline is
``contracts/Settlement.sol`` as of ``--baseline-rev`` (git), compiled like the current one.
Batches are the largest that fit under geth's 128 KiB transaction limit, after every
participant already has a bill (the bridge's steady state), so the rows compare like with like:

* unmetered: no party of any trade has a meter;
* metered, open slot: both parties are metered and every trade crosses their meters, into
  slots that already hold boundary energy; "new slot": the first boundary trade of a party
  in a slot (a new storage slot each);
* reading: ``submitReadings`` of 100 meters' boundary readings, with a minutes anchor and
  without one (a zero anchor costs no storage);
* closed slot: ``closeSlots`` of 100 balanced slots with charges.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account import Account
from gas_per_trade import (
    DATA_DIR,
    Bench,
    connect,
    largest_batch,
    record,
    sample_trades,
    signed_size,
)
from web3.contract import Contract

from pilotchain.contract import (
    MAX_TRANSACTION_BYTES,
    compile_settlement,
    deploy_settlement,
    find_solc,
    pinned_solc_version,
    settlement_contract,
)
from pilotchain.metering import WH, Domain, MeterReading, meter_id, sign_reading
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import TradeRecord, read_recording, uuid_to_bytes32

SEED = 2
METERS = 100
SLOT = 900


def baseline_contract(bench: Bench, revision: str) -> Contract:
    """Settlement as of ``revision``, compiled with the same compiler and settings."""
    source = subprocess.run(["git", "show", f"{revision}:contracts/Settlement.sol"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="gas-baseline-") as tmp:
        root = Path(tmp)
        (root / "contracts").mkdir()
        (root / "contracts" / "Settlement.sol").write_text(source)
        shutil.copy(PROJECT_ROOT / "package.json", root)
        (root / "node_modules").symlink_to(PROJECT_ROOT / "node_modules")
        compiled = compile_settlement(root / "build", project_root=root,
                                      solc_binary=find_solc(pinned_solc_version()))
    factory = bench.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    tx_hash = factory.constructor(bench.operator.address, bench.recorder.address).transact(
        {"from": bench.w3.eth.accounts[0]})
    address = bench.w3.eth.get_transaction_receipt(tx_hash)["contractAddress"]
    return bench.w3.eth.contract(address=address, abi=compiled.abi)


def send(bench: Bench, function: Any, sender: str) -> int:
    """Gas used by a transaction that must succeed."""
    receipt = bench.w3.eth.get_transaction_receipt(
        function.transact({"from": sender, "gas": 30_000_000}))
    if receipt["status"] != 1:
        raise SystemExit(f"{function.fn_name} reverted.")
    return int(receipt["gasUsed"])


def per_trade(bench: Bench, contract: Contract, batch: Sequence[TradeRecord]) -> float:
    return record(bench, contract, batch).per_trade


def in_new_slots(batch: Sequence[TradeRecord], rng: random.Random) -> list[TradeRecord]:
    """The trades moved to slots nobody traded in yet (one distinct slot per trade)."""
    base = 2_000_000_000 // SLOT * SLOT + rng.randrange(1000) * 10_000 * SLOT
    return [dataclasses.replace(t, time_slot=base + i * SLOT) for i, t in enumerate(batch)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default="main",
                        help="git revision of the contract before metering (default: main)")
    args = parser.parse_args(argv)
    bench = connect()
    w3, operator, reader = bench.w3, bench.operator, bench.operator
    # gas_per_trade signs raw transactions; admin calls here go through eth-tester's accounts.
    w3.provider.ethereum_tester.add_account(operator.key.to_0x_hex())  # type: ignore[attr-defined]
    pool = [r for path in sorted(DATA_DIR.glob("*.jsonl")) for r in read_recording(path)]
    rng = random.Random(SEED)

    old = baseline_contract(bench, args.baseline_rev)
    new = settlement_contract(w3, deploy_settlement(w3, operator, bench.recorder.address,
                                                    reader=reader.address))
    full = largest_batch(
        lambda n: signed_size(bench, new, sample_trades(pool, n, rng)) <= MAX_TRANSACTION_BYTES)
    for contract in (old, new):
        for start in range(0, len(pool), full):
            record(bench, contract, pool[start : start + full])

    baseline = per_trade(bench, old, sample_trades(pool, full, rng))
    unmetered = per_trade(bench, new, sample_trades(pool, full, rng))

    # Meter every party, in a home area no trade is in, so every trade crosses both meters.
    parties = sorted({p for r in pool for p in (r.seller, r.buyer)})
    keys = {p: Account.from_key(rng.randbytes(32)) for p in parties}
    meters = {p: meter_id(uuid.UUID(int=rng.getrandbits(128))) for p in parties}
    for p in parties:
        send(bench, new.functions.registerMeter(meters[p], keys[p].address, uuid_to_bytes32(p),
                                                uuid_to_bytes32(uuid.uuid4())), operator.address)
    # Every (party, slot) of the pool gets boundary energy first, so the next batch adds to it.
    for start in range(0, len(pool), full):
        chunk = pool[start : start + full]
        record(bench, new, [dataclasses.replace(t, trade_id=uuid.uuid4()) for t in chunk])
    metered_open = per_trade(bench, new, sample_trades(pool, full, rng))
    metered_new = per_trade(bench, new, in_new_slots(sample_trades(pool, full, rng), rng))

    # Readings: 100 meters (fresh participants), two boundaries each, the second measured.
    domain = Domain(w3.eth.chain_id, new.address)
    fleet = [(meter_id(uuid.UUID(int=rng.getrandbits(128))), Account.from_key(rng.randbytes(32)),
              uuid.UUID(int=rng.getrandbits(128))) for _ in range(METERS)]
    for meter, key, participant in fleet:
        pid = uuid_to_bytes32(participant)
        send(bench, new.functions.registerMeter(meter, key.address, pid, pid), operator.address)
    slot = (w3.eth.get_block("latest")["timestamp"] // SLOT - 10) * SLOT
    send(bench, new.functions.setRates(0, 40 * 10**18, 30 * 10**18, 8 * 10**18), operator.address)
    send(bench, new.functions.setCloseDelay(0), operator.address)
    buyer = uuid.uuid4()
    sales = [TradeRecord(uuid.uuid4(), uuid.uuid4(), slot, p, buyer, p, buyer, 10 * WH, 10**18, 0)
             for _, _, p in fleet]
    record(bench, new, sales)

    def readings(time: int, export: int, anchor: bytes) -> list[tuple[Any, ...]]:
        signed = [sign_reading(MeterReading(m, time, 0, export, anchor), k, domain)
                  for m, k, _ in fleet]
        return [reading.as_contract_tuple() for reading in signed]

    first = send(bench, new.functions.submitReadings(readings(slot, 0, bytes(32))),
                 reader.address) / METERS
    anchored = send(bench, new.functions.submitReadings(readings(slot + SLOT, 7, b"\x5a" * 32)),
                    reader.address) / METERS
    closed = send(bench, new.functions.closeSlots([uuid_to_bytes32(p) for _, _, p in fleet],
                                                  [slot] * METERS), bench.w3.eth.accounts[3])
    per_close = closed / METERS

    rows = [
        (f"trade, before metering ({args.baseline_rev})", baseline),
        ("trade, unmetered parties", unmetered),
        ("trade, both parties metered, open slot", metered_open),
        ("trade, both parties metered, new slot", metered_new),
        ("reading, first of its meter, zero anchor", first),
        ("reading, with a minutes anchor", anchored),
        ("closed slot, balanced with a charge", per_close),
    ]
    print(f"batches of {full} trades, {METERS} readings, {METERS} slots; London EVM (eth-tester)")
    print(f"{'':45} {'gas':>9} {'x before':>9}")
    for label, gas in rows:
        print(f"{label:45} {gas:>9.0f} {gas / baseline:>9.3f}")
    print(json.dumps({label: round(gas) for label, gas in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
