"""Metering at pilot scale: 10,000 meters reading every minute and the trades of a
10,000-participant community, settled in real time on the default chain settings.

    .venv/bin/python benchmarks/metering_load.py [--meters 10000] [--before 2] [--after 6]

Starts its own network (the project's LocalNetwork: three signers and the RPC node, free
ports, a temporary directory) with the default BLOCK_PERIOD (5 s) and GAS_LIMIT (60,000,000),
its own Redis and mosquitto, deploys Settlement and runs the bridge, the ingest writer and the
MQTT subscriber as real processes with their default settings. Then:

1. **setup** (timed apart): ``--meters`` meters registered by the operator, one
   ``registerMeter`` each, sent as fast as the blocks take them; every reading of the run
   signed in advance, so the load generator's own signing is not what is measured.
2. **load**, in real time: every minute, one signed minute reading of every meter published
   over MQTT (each meter's own account, QoS 1, one message each) for ``--before`` minutes; at the
   slot boundary every meter publishes its boundary reading (anchoring the minutes before it)
   and the community's trades of the slot just ended (one per participant, each crossing
   both parties' meters) are appended to the bridge's stream at once; minute readings go on
   each minute until the boundary burst is on chain (at least two, at most ``--after``).
   The meters' clocks run behind the chain's by a constant offset under one slot, so a
   900 s slot's boundary falls ``--before`` minutes into the run instead of at the next
   quarter hour; nothing in the contract or the ingest depends on a reading's age, only on
   it not being ahead of the clock.
3. **gas per trade before metering**: ``benchmarks/gas_metering.py`` (eth-tester) run with
   the pre-metering contract as its baseline, for the unmetered and before-metering rows.

Prints the figures, writes ``metering_load.json`` and ``metering_load.png`` under ``--out``
(default ``benchmarks/results/``) and stops every process it started, also on failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import coincurve
import redis
import requests
from bridge_throughput import CpuMeter, _quantile
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import Web3Exception

from bridge.config import BridgeSettings, StreamSettings
from bridge.events import EVENT_FIELD
from ingest.batches import READING_RECORDED_TOPIC
from ingest.config import IngestSettings, MqttSettings
from pilotchain.chain import Fees, Sender, connect, wait_for, wait_for_receipt
from pilotchain.config import ChainSettings
from pilotchain.contract import deploy_settlement, save_deployment, settlement_contract
from pilotchain.deployment import ensure_reader
from pilotchain.errors import ChainError
from pilotchain.metering import (
    DEFAULT_SLOT_SECONDS,
    READING_TYPEHASH,
    ZERO_ANCHOR,
    Domain,
    MeterReading,
    SignedReading,
    meter_id,
)
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import TRADE_SETTLED_TOPIC, uuid_to_bytes32
from runner.bridge import BridgeService
from runner.ingest import IngestMqttService, IngestService
from runner.localnet import LocalNetwork
from runner.meters import MqttPublisher, SimulatedMeter
from runner.mqtt import MqttService, private_mqtt
from runner.ports import Ports, free_port
from runner.redis import RedisService, private_connection

SEED = 3
SLOT = DEFAULT_SLOT_SECONDS
TRADES_STREAM = "bench:trades"
READINGS_STREAM = "bench:readings"
# The contract before metering (its parent added meters); gas_metering compiles it from git.
PRE_METERING_REV = "d17841f^"
DOCUMENTED_GAS_PER_TRADE = 31_925  # docs/contract.md, full batches of 409
REGISTER_GAS = 300_000
# Registrations in flight: about three full blocks, well inside geth's pool limits.
REGISTER_WINDOW = 900
TEMPLATE = PROJECT_ROOT / "tests" / "data" / "default_2a_one_sided.jsonl"


# --- the meters and their readings ----------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """The community: participant i owns meter i (home area: its own uuid)."""

    participants: list[uuid.UUID]
    meters: list[bytes]
    keys: list[bytes]

    @classmethod
    def make(cls, count: int, rng: random.Random) -> Fleet:
        return cls([uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)],
                   [meter_id(uuid.UUID(int=rng.getrandbits(128), version=4))
                    for _ in range(count)],
                   [rng.randbytes(32) for _ in range(count)])


class Signer:
    """Signs readings by their EIP-712 digest, computed without eth-account's typed-data
    encoder (checked against :meth:`MeterReading.digest` once): tens of thousands of
    signatures must be ready before the load starts."""

    def __init__(self, domain: Domain) -> None:
        self.prefix = b"\x19\x01" + domain.separator()
        self.domain = domain

    def digest(self, r: MeterReading) -> bytes:
        words = (READING_TYPEHASH + r.meter + r.time.to_bytes(32, "big")
                 + r.import_wh.to_bytes(32, "big") + r.export_wh.to_bytes(32, "big")
                 + r.minutes_anchor)
        return keccak(self.prefix + keccak(words))

    def sign(self, reading: MeterReading, key: coincurve.PrivateKey) -> SignedReading:
        # r, s (libsecp256k1 gives the lower-half s), then the recovery id as v 27/28.
        signature = key.sign_recoverable(self.digest(reading), hasher=None)
        return SignedReading(reading, signature[:64] + bytes([27 + signature[64]]))


def sign_all(fleet: Fleet, domain: Domain, boundary: int, before: int, after: int
             ) -> dict[int, list[SignedReading]]:
    """Reading time -> every meter's signed reading at that minute: ``before`` minutes, the
    boundary (anchoring them) and ``after`` minutes. Registers rise a few Wh a minute."""
    signer = Signer(domain)
    times = [boundary + 60 * k for k in range(-before, after + 1)]
    out: dict[int, list[SignedReading]] = {t: [] for t in times}
    for index, (meter, raw) in enumerate(zip(fleet.meters, fleet.keys, strict=True)):
        key = coincurve.PrivateKey(raw)
        digests = []
        for t in times:
            minute = (t - times[0]) // 60
            import_wh, export_wh = 1_000_000 + (3 + index % 5) * minute, 50_000 + minute % 2
            anchor = keccak(b"".join(digests)) if t == boundary and digests else ZERO_ANCHOR
            reading = MeterReading(meter, t, import_wh, export_wh, anchor)
            if t < boundary:
                digests.append(signer.digest(reading))
            out[t].append(signer.sign(reading, key))
    first = out[times[0]][0]
    if first.reading.digest(domain) != signer.digest(first.reading):
        raise SystemExit("The benchmark's digest differs from pilotchain.metering's.")
    if first.signer(domain) != Account.from_key(fleet.keys[0]).address:
        raise SystemExit("The benchmark's signature does not recover to the meter's key.")
    return out


def register(w3: Web3, url: str, operator: LocalAccount, contract: Any, fleet: Fleet,
             signers: Sequence[str]) -> dict[str, Any]:
    """registerMeter for every meter, as fast as the blocks take them; time and gas.

    Sent one after the other, in nonce order: the validators fetch announced transactions in
    any order and drop an account's transactions queued beyond a gap (geth's accountqueue,
    64), so JSON-RPC batches of hundreds from one account stalled the registration."""
    sender = Sender(w3, operator, url=url)
    fees = Fees(500 * 10**9, 10**9)  # the base fee climbs through these full blocks
    started, first_block = time.time(), w3.eth.block_number
    hashes: list[HexBytes] = []
    confirmed = 0
    for index, (participant, meter) in enumerate(zip(fleet.participants, fleet.meters,
                                                     strict=True)):
        pid = uuid_to_bytes32(participant)
        data = contract.encode_abi("registerMeter", args=[meter, signers[index], pid, pid])
        hashes.append(sender.send({"to": contract.address, "data": HexBytes(data),
                                   "gas": REGISTER_GAS}, fees=fees))
        while len(hashes) - confirmed > REGISTER_WINDOW:
            wait_for_receipt(w3, hashes[confirmed], timeout=120)
            confirmed += REGISTER_WINDOW // 3
    last_block = wait_for_receipt(w3, hashes[-1], timeout=180)["blockNumber"]
    seconds = time.time() - started
    blocks = [w3.eth.get_block(n) for n in range(first_block + 1, last_block + 1)]
    gas = sum(b["gasUsed"] for b in blocks)
    failed = sum(1 for h in hashes[:: max(1, len(hashes) // 50)]
                 if w3.eth.get_transaction_receipt(h)["status"] != 1)
    if failed:
        raise SystemExit(f"{failed} sampled registerMeter transactions reverted.")
    return {"meters": len(hashes), "seconds": round(seconds, 1), "blocks": len(blocks),
            "gas_total": gas, "gas_per_meter": round(gas / len(hashes)),
            "gas_per_block_mean": round(gas / len(blocks)),
            "base_fee_gwei_max": round(max(b["baseFeePerGas"] for b in blocks) / 1e9, 2)}


# --- the trades -----------------------------------------------------------------------------


def trade_events(fleet: Fleet, slot: int, rng: random.Random) -> list[dict[str, Any]]:
    """One trade per participant in the community market (no one's home area) for ``slot``:
    participant i sells to participant i + n/2, so every trade crosses both parties' meters."""
    template = json.loads(TEMPLATE.read_text().splitlines()[0])
    market = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    when = datetime.fromtimestamp(slot, UTC)
    count = len(fleet.participants)
    events = []
    for i, seller in enumerate(fleet.participants):
        buyer = fleet.participants[(i + count // 2) % count]
        event = json.loads(json.dumps(template))
        trade = event["trade"]
        trade["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for role, party in (("seller", seller), ("buyer", buyer)):
            trade[role] = {"name": f"House {party.hex[:8]}", "uuid": str(party),
                           "origin": f"House {party.hex[:8]}", "origin_uuid": str(party)}
        trade["time_slot"] = when.strftime("%Y-%m-%dT%H:%M:%S")
        event["time_slot"] = when.strftime("%Y-%m-%d %H:%M:%S+00:00")
        event["market_id"] = market
        events.append(event)
    return events


# --- watching the chain and the streams -----------------------------------------------------


@dataclass
class Watch:
    """What the watcher saw: each block with its readings' and trades' gas and counts, when
    each boundary reading and trade appeared, and the streams' lengths over time."""

    blocks: dict[int, dict[str, Any]] = field(default_factory=dict)
    reading_seen: dict[bytes, float] = field(default_factory=dict)
    trades_seen: list[float] = field(default_factory=list)
    streams: list[dict[str, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def watch(w3: Web3, client: redis.Redis, senders: dict[str, str], result: Watch) -> None:
    """Poll the RPC node and Redis every 200 ms until stopped."""
    head = w3.eth.block_number
    while not result.stop.is_set():
        try:
            latest = w3.eth.block_number
            for number in range(head + 1, latest + 1):
                _note_block(w3, number, senders, result)
                head = number
        except (Web3Exception, requests.RequestException, ValueError):
            pass  # a header announced before its body: look again
        try:
            result.streams.append({"t": time.time(),
                                   **{name: client.xlen(stream) for name, stream in (
                                       ("readings", READINGS_STREAM),
                                       ("minutes", f"{READINGS_STREAM}:minutes"),
                                       ("dead", f"{READINGS_STREAM}:dead"),
                                       ("trades_dead", f"{TRADES_STREAM}:dead"))}})
        except redis.RedisError:
            pass
        result.stop.wait(0.2)


def _note_block(w3: Web3, number: int, senders: dict[str, str], result: Watch) -> None:
    seen = time.time()
    block = w3.eth.get_block(number)
    row = {"number": number, "seen": seen, "time": block["timestamp"],
           "gas_used": block["gasUsed"], "base_fee": block["baseFeePerGas"],
           "reading_gas": 0, "trade_gas": 0, "other_gas": 0, "readings": 0, "trades": 0,
           "reverted_gas": 0, "reverted": 0}
    for tx_hash in block["transactions"]:
        receipt = w3.eth.get_transaction_receipt(tx_hash)
        kind = senders.get(receipt["from"].lower(), "other")
        if receipt["status"] != 1:  # a batch that ran out of gas: counted apart
            kind = "reverted"
            row["reverted"] += 1
        row[f"{kind}_gas"] += receipt["gasUsed"]
        for log in receipt["logs"]:
            topic = bytes(log["topics"][0])
            if topic == READING_RECORDED_TOPIC:
                row["readings"] += 1
                result.reading_seen.setdefault(bytes(log["topics"][1]), seen)
            elif topic == TRADE_SETTLED_TOPIC:
                row["trades"] += 1
                result.trades_seen.append(seen)
    result.blocks[number] = row


# --- the load -------------------------------------------------------------------------------


def publish_minute(publisher: MqttPublisher, meters: Sequence[SimulatedMeter],
                   readings: Sequence[SignedReading]) -> tuple[float, float]:
    """Every meter's reading of one minute; (started, seconds until the broker took all)."""
    started = time.time()
    publisher(list(zip(meters, readings, strict=True)))
    return started, time.time() - started


def run_load(args: argparse.Namespace, signed: dict[int, list[SignedReading]],
             meters: Sequence[SimulatedMeter], events: list[dict[str, Any]],
             publisher: MqttPublisher, client: redis.Redis, seen: Watch, offset: float,
             boundary: int, cpu: CpuMeter) -> dict[str, Any]:
    """Publish each minute when its (offset) time comes; the boundary brings the trades."""
    count = len(meters)
    minutes: list[dict[str, Any]] = []
    boundary_at = trades_at = 0.0
    burst_cpu: dict[str, float] = {}
    cleared_at: float | None = None
    cpu_start = cpu.sample()
    load_began = time.time()
    for t in sorted(signed):
        due = t + offset
        if t > boundary:
            cleared_at = cleared_at or _cleared(seen, count, len(events))
            if cleared_at is not None and t >= boundary + 2 * 60 + 1:
                break
        time.sleep(max(0.0, due - time.time()))  # pacing: a meter reads when its minute comes
        if t == boundary:
            burst_before = cpu.sample()
        started, took = publish_minute(publisher, meters, signed[t])
        kind = "boundary" if t == boundary else "minute"
        print(f"{datetime.fromtimestamp(t, UTC):%H:%M} ({kind}): {count} readings published "
              f"in {took:.1f} s", file=sys.stderr)
        if t == boundary:
            boundary_at = started
            pipe = client.pipeline(transaction=False)
            for event in events:
                pipe.xadd(TRADES_STREAM, {EVENT_FIELD: json.dumps(event)})
            pipe.execute()
            trades_at = time.time()
            print(f"  {len(events)} trades in the bridge's stream after "
                  f"{trades_at - started:.1f} s", file=sys.stderr)
        minutes.append({"time": t, "boundary": t == boundary, "published_at": started,
                        "publish_seconds": round(took, 2)})
    wait_for(lambda: _cleared(seen, count, len(events)), timeout=args.clear_timeout,
             interval=0.5, what=f"{count} boundary readings and {len(events)} trades on chain")
    burst_end = max(max(seen.reading_seen.values()), max(seen.trades_seen))
    burst_cpu = CpuMeter.usage(burst_before, cpu.sample(), time.time() - boundary_at)
    published_minutes = count * sum(1 for m in minutes if not m["boundary"])
    wait_for(lambda: (_last(seen, "minutes") >= published_minutes) or None, timeout=120,
             interval=0.5, what=f"the ingest to absorb {published_minutes} minute readings")
    load_cpu = CpuMeter.usage(cpu_start, cpu.sample(), time.time() - load_began)
    return {"minutes": minutes, "boundary_published_at": boundary_at,
            "trades_appended_at": trades_at, "burst_end": burst_end,
            "cores_in_use_burst": burst_cpu, "cores_in_use_load": load_cpu,
            "load_seconds": round(time.time() - load_began, 1)}


def _cleared(seen: Watch, readings: int, trades: int) -> float | None:
    if len(seen.reading_seen) >= readings and len(seen.trades_seen) >= trades:
        return time.time()
    return None


def _last(seen: Watch, name: str) -> float:
    return seen.streams[-1][name] if seen.streams else 0.0


class TreeCpuMeter(CpuMeter):
    """CpuMeter counting each named process with its descendants (geth runs under
    validator.sh and node.sh, the services under their own launchers)."""

    def sample(self) -> dict[str, float]:
        sample = super().sample()
        children: dict[int, list[int]] = {}
        times: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parts = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(parts[1]), []).append(int(entry.name))
            times[int(entry.name)] = (int(parts[11]) + int(parts[12])) / self.ticks
        for name, pid in self.pids.items():
            todo, total = [pid], 0.0
            while todo:
                current = todo.pop()
                total += times.get(current, 0.0)
                todo += children.get(current, [])
            sample[name] = total
        return sample


# --- figures --------------------------------------------------------------------------------


def absorbed(seen: Watch, minutes: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """For each minute batch: seconds until all its readings were in Redis (MQTT ->
    subscriber) and, for minute readings, checked by the ingest (in the minutes stream)."""
    rows = []
    in_stream, in_minutes = 0, 0
    for m in minutes:
        in_stream += count
        in_minutes += 0 if m["boundary"] else count
        t0 = m["published_at"]
        redis_at = next((s["t"] for s in seen.streams
                         if s["t"] >= t0 and s["readings"] >= in_stream), None)
        checked_at = None if m["boundary"] else next(
            (s["t"] for s in seen.streams if s["t"] >= t0 and s["minutes"] >= in_minutes), None)
        rows.append({**m, "in_redis_s": None if redis_at is None else round(redis_at - t0, 1),
                     "checked_s": None if checked_at is None else round(checked_at - t0, 1)})
    return rows


def figures(args: argparse.Namespace, load: dict[str, Any], seen: Watch, count: int,
            trades: int, period: int, gas_limit: int) -> dict[str, Any]:
    t0 = load["boundary_published_at"]
    blocks = sorted(seen.blocks.values(), key=lambda b: b["number"])
    burst = [b for b in blocks if b["seen"] >= t0 and (b["readings"] or b["trades"])]
    first_burst, last_burst = burst[0]["number"], burst[-1]["number"]
    span = [b for b in blocks if first_burst <= b["number"] <= last_burst]
    reading_gas = sum(b["reading_gas"] for b in blocks)
    trade_gas = sum(b["trade_gas"] for b in blocks)
    target = gas_limit // 2
    per_reading = reading_gas / count
    latencies = sorted(s - t0 for s in seen.reading_seen.values())
    reading_span = max(seen.reading_seen.values()) - t0
    ingest_bound = 0.5 * target / per_reading / period  # INGEST_GAS_BUDGET 0.5 of the target
    full_bound = target / per_reading / period
    slot_blocks = SLOT // period
    return {
        "boundary_readings": count, "trades": trades,
        "boundary_readings_per_s": round(count / reading_span, 1),
        "bound_readings_per_s_at_target": round(full_bound, 1),
        "bound_readings_per_s_at_ingest_budget": round(ingest_bound, 1),
        "ratio_to_ingest_budget_bound": round(count / reading_span / ingest_bound, 3),
        "gas_per_reading": round(per_reading),
        "gas_per_trade": round(trade_gas / trades),
        "reverted_transactions": sum(b["reverted"] for b in blocks),
        "reverted_gas": sum(b["reverted_gas"] for b in blocks),
        "gas_per_trade_with_reverted": round((trade_gas + sum(b["reverted_gas"] for b in blocks))
                                             / trades),
        "latency_p50_s": round(_quantile(latencies, 0.5), 1),
        "latency_p95_s": round(_quantile(latencies, 0.95), 1),
        "latency_max_s": round(latencies[-1], 1),
        "readings_on_chain_s": round(reading_span, 1),
        "burst_cleared_s": round(load["burst_end"] - t0, 1),
        "burst_blocks": len(span),
        "gas_target": target,
        "share_of_target_burst": round(sum(b["gas_used"] for b in span) / (target * len(span)),
                                       3),
        "share_of_limit_burst": round(sum(b["gas_used"] for b in span)
                                      / (gas_limit * len(span)), 3),
        "share_of_target_slot": round((reading_gas + trade_gas) / (target * slot_blocks), 3),
        "base_fee_gwei_burst": [round(span[0]["base_fee"] / 1e9, 3),
                                round(max(b["base_fee"] for b in span) / 1e9, 3),
                                round(span[-1]["base_fee"] / 1e9, 3)],
        "mean_block_interval_s": round((span[-1]["seen"] - span[0]["seen"])
                                       / max(1, len(span) - 1), 2),
        "latencies": latencies,
    }


def gas_table() -> dict[str, int]:
    """gas_metering.py's rows, with the contract before metering as its baseline."""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("gas_metering.py")),
                           "--baseline-rev", PRE_METERING_REV], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_report(result: dict[str, Any]) -> None:
    f, s, mins = result["figures"], result["setup"], result["minutes"]
    print(f"\nMetering at pilot scale: {result['meters']:,} meters, {f['trades']:,} trades; "
          f"{result['period_s']} s blocks, gas limit {result['gas_limit']:,} "
          f"(target {f['gas_target']:,}); machine load {result['loadavg_before']}")
    print(f"setup: {s['meters']:,} meters registered in {s['seconds']} s, {s['blocks']} blocks, "
          f"{s['gas_per_meter']:,} gas each ({s['gas_total'] / 1e9:.2f} G), base fee up to "
          f"{s['base_fee_gwei_max']} gwei; readings signed in {result['signing_s']} s")
    minute = [m for m in mins if not m["boundary"]]
    print(f"minute readings: {len(minute)} minutes x {result['meters']:,} over {result['via']}; "
          f"in Redis after " + ", ".join(f"{m['in_redis_s']}" for m in minute) + " s; checked "
          "by the ingest after " + ", ".join(f"{m['checked_s']}" for m in minute) + " s")
    print(f"minute readings absorbed: {result['minute_readings_per_s']}/s while a minute's "
          f"batch was being checked (median; offered {result['meters'] / 60:.0f}/s on average, "
          f"each minute's {result['meters']:,} at once)")
    print(f"boundary readings on chain: {f['boundary_readings_per_s']}/s "
          f"(bound at the ingest's gas budget {f['bound_readings_per_s_at_ingest_budget']}/s, "
          f"ratio {f['ratio_to_ingest_budget_bound']}; at the whole target "
          f"{f['bound_readings_per_s_at_target']}/s)")
    print(f"gas per reading {f['gas_per_reading']:,}; gas per trade {f['gas_per_trade']:,} "
          f"({f['gas_per_trade_with_reverted']:,} counting {f['reverted_transactions']} "
          f"reverted transactions, {f['reverted_gas'] / 1e6:.0f} M gas)")
    print(f"publication -> receipt: p50 {f['latency_p50_s']} s, p95 {f['latency_p95_s']} s, "
          f"max {f['latency_max_s']} s; burst (readings + trades) cleared in "
          f"{f['burst_cleared_s']} s over {f['burst_blocks']} blocks")
    print(f"gas target used: {f['share_of_target_burst']:.0%} during the burst "
          f"({f['share_of_limit_burst']:.0%} of the limit), {f['share_of_target_slot']:.1%} "
          f"over the {SLOT} s slot; base fee first/max/last {f['base_fee_gwei_burst']} gwei")
    g = result["gas_per_trade"]
    print(f"gas per trade: metered here {f['gas_per_trade']:,} "
          f"({f['gas_per_trade'] / DOCUMENTED_GAS_PER_TRADE:.3f} x {DOCUMENTED_GAS_PER_TRADE:,})"
          + "".join(f"; {label} {gas:,} ({gas / DOCUMENTED_GAS_PER_TRADE:.3f} x)"
                    for label, gas in g.items()))
    print("cores in use during the burst: " + ", ".join(
        f"{k} {v}" for k, v in result["cores_in_use_burst"].items()))


def plot(result: dict[str, Any], seen: Watch, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    t0 = result["boundary_published_at"]
    blocks = sorted((b for b in seen.blocks.values() if b["seen"] >= t0 - 30),
                    key=lambda b: b["number"])
    x = [b["seen"] - t0 for b in blocks]
    ax = axes[0][0]
    ax.bar(x, [b["reading_gas"] / 1e6 for b in blocks], width=3, label="readings")
    ax.bar(x, [b["trade_gas"] / 1e6 for b in blocks], width=3,
           bottom=[b["reading_gas"] / 1e6 for b in blocks], label="trades")
    ax.axhline(result["figures"]["gas_target"] / 1e6, color="red", linestyle="--",
               label="gas target")
    ax.set(xlabel="seconds after the boundary", ylabel="gas per block (M)",
           title="Blocks during the boundary burst")
    ax.legend(loc="upper right")
    ax = axes[0][1]
    readings = sorted(seen.reading_seen.values())
    ax.plot([t - t0 for t in readings], range(1, len(readings) + 1), label="boundary readings")
    trades = sorted(seen.trades_seen)
    ax.plot([t - t0 for t in trades], range(1, len(trades) + 1), label="trades")
    ax.set(xlabel="seconds after the boundary", ylabel="on chain",
           title="Boundary readings and trades on chain")
    ax.legend()
    ax = axes[1][0]
    lat = result["figures"]["latencies"]
    ax.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))])
    ax.set(xlabel="publication -> receipt (s)", ylabel="fraction of boundary readings",
           title="Boundary reading latency")
    ax = axes[1][1]
    first = seen.streams[0]["t"] if seen.streams else t0
    ax.plot([s["t"] - first for s in seen.streams], [s["readings"] for s in seen.streams],
            label="readings in Redis (MQTT subscriber)")
    ax.plot([s["t"] - first for s in seen.streams], [s["minutes"] for s in seen.streams],
            label="minute readings checked (ingest)")
    ax.set(xlabel="seconds", ylabel="readings", title="Minute readings absorbed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --- main -----------------------------------------------------------------------------------


def network_settings(home: Path) -> ChainSettings:
    """The default chain settings (5 s blocks, 60M gas limit) in a directory of its own."""
    return dataclasses.replace(ChainSettings(), keys_dir=home / "keys",
                               genesis_file=home / "genesis.json", data_dir=home / "data")


def base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp")}


def start_services(net: LocalNetwork, home: Path, store: RedisService, deployment_file: Path,
                   started: list[Any]) -> tuple[Any, ...]:
    """Bridge, ingest, mosquitto and the MQTT subscriber, each with its defaults."""
    chain = dataclasses.replace(net.settings, rpc_url_override=net.rpc_url,
                                deployment_file_override=deployment_file)
    pids = home / "pids"
    bridge = BridgeSettings(chain=chain, streams=StreamSettings(store.url, TRADES_STREAM),
                            metrics_port=free_port())
    started.append(BridgeService(bridge, {**base_env(), **bridge.to_env()}, pids))
    ingest = IngestSettings(chain=chain, redis_url=store.url, stream=READINGS_STREAM,
                            metrics_port=free_port())
    started.append(IngestService(ingest, {**base_env(), **ingest.to_env()}, pids))
    connection = private_mqtt(home / "meters.passwd")
    broker = MqttService(connection, home / "mosquitto", pids)
    (home / "mosquitto").mkdir()
    started.append(broker)
    secrets_dir = home / "mqtt-secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "ingest").write_text(str(connection.password))
    env = {**base_env(), **ingest.to_env(), "MQTT_HOST": connection.host,
           "MQTT_PORT": str(connection.port), "MQTT_PASSWORD_FILE": str(secrets_dir / "ingest"),
           "INGEST_MQTT_METRICS_PORT": str(free_port()),
           "INGEST_MQTT_CLIENT_ID": f"bench-{uuid.uuid4().hex[:8]}"}
    subscriber = IngestMqttService(MqttSettings.from_env(env), env, pids)
    started.append(subscriber)
    for service in started:
        service.start()
    return started[0], started[1], broker, subscriber, connection


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10_000,
                        help="meters, and participants (one trade each) of the community")
    parser.add_argument("--before", type=int, default=2,
                        help="minutes of minute readings before the boundary")
    parser.add_argument("--after", type=int, default=6,
                        help="at most this many minutes after the boundary (the run stops "
                             "once the burst is on chain and two have passed)")
    parser.add_argument("--clear-timeout", type=float, default=600.0)
    parser.add_argument("--skip-gas-table", action="store_true",
                        help="do not run gas_metering.py for the before-metering rows")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    loadavg = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {"meters": args.meters, "via": "MQTT", "loadavg_before": loadavg}
    if not args.skip_gas_table:
        print("gas per trade before metering (gas_metering.py) ...", file=sys.stderr)
        table = gas_table()
        result["gas_per_trade"] = {k: v for k, v in table.items() if k.startswith("trade")}
    else:
        result["gas_per_trade"] = {}
    fleet = Fleet.make(args.meters, rng)
    with tempfile.TemporaryDirectory(prefix="metering-bench-") as tmp:
        home = Path(tmp)
        net = LocalNetwork(network_settings(home / "net"), ChainSettings().geth_bin_dir,
                           Ports.free(), fast_keys=True)
        store = RedisService(private_connection(), home / "redis", home / "pids")
        services: list[Any] = []
        seen = Watch()
        publisher: MqttPublisher | None = None
        try:
            net.init()
            net.start()
            net.wait_for_block(1, timeout=90)
            store.start()
            w3 = connect(net.rpc_url)
            operator = net.keys.role("operator").unlock()
            reader = net.keys.role("ingest").address
            deployment = deploy_settlement(w3, operator, net.keys.role("bridge").address,
                                           reader=reader)
            ensure_reader(w3, operator, deployment, reader)
            record = home / "settlement.json"
            save_deployment(deployment, record)
            contract = settlement_contract(w3, deployment)
            period, gas_limit = net.settings.block_period, net.settings.gas_limit
            result.update(period_s=period, gas_limit=gas_limit,
                          slot_seconds=int(contract.functions.slotSeconds().call()))
            print(f"setup: registering {args.meters} meters", file=sys.stderr)
            addresses = [Account.from_key(k).address for k in fleet.keys]
            result["setup"] = register(w3, net.rpc_url, operator, contract, fleet, addresses)
            print(f"setup: {result['setup']}", file=sys.stderr)
            bridge, ingest, broker, subscriber, connection = start_services(
                net, home, store, record, services)
            # The meters' clocks: the boundary comes --before minutes (plus signing) from now.
            began = time.time()
            lead = 60 * args.before + 30 + args.meters * (args.before + args.after + 1) / 4000
            boundary = int(began + lead) // SLOT * SLOT
            offset = began + lead - boundary
            domain = Domain(deployment.chain_id, deployment.address)
            signed = sign_all(fleet, domain, boundary, args.before, args.after)
            result["signing_s"] = round(time.time() - began, 1)
            first_due = boundary - 60 * args.before + offset
            if first_due < time.time():
                raise SystemExit(f"Signing took {result['signing_s']} s, longer than planned.")
            events = trade_events(fleet, boundary - SLOT, rng)
            meters = [SimulatedMeter(p, m, Account.from_key(k), 1.0) for p, m, k in
                      zip(fleet.participants, fleet.meters, fleet.keys, strict=True)]
            # Each meter publishes with its own account over its own connection (one paho
            # thread each: fine for a thousand meters; ten thousand want a multiplexed
            # publisher, not written yet).
            publisher = MqttPublisher(connection, broker.reload)
            publisher.admit(meters)
            client = redis.Redis.from_url(store.url)
            senders = {net.keys.role("bridge").address.lower(): "trade", reader.lower(): "reading"}
            threading.Thread(target=watch, args=(connect(net.rpc_url), client, senders, seen),
                             daemon=True).start()
            cpu = TreeCpuMeter({**{n: net.process(n).pid for n in net.node_names()},
                            "bridge": bridge.process.pid, "ingest": ingest.process.pid,
                            "ingest-mqtt": subscriber.process.pid,
                            "mosquitto": broker.process.pid, "redis": store.process.pid,
                            "load generator": os.getpid()})
            result["clock_offset_s"] = round(offset, 1)
            try:
                load = run_load(args, signed, meters, events, publisher, client, seen, offset,
                                boundary, cpu)
            except ChainError as error:
                # Keep what the run saw: where the burst stood is the finding.
                result["incomplete"] = {
                    "error": str(error),
                    "boundary_readings_on_chain": len(seen.reading_seen),
                    "trades_on_chain": len(seen.trades_seen),
                    "bridge_metrics": requests.get(f"{bridge.metrics_url}/status",
                                                   timeout=5).json(),
                    "ingest_metrics": requests.get(f"{ingest.metrics_url}/status",
                                                   timeout=5).json()}
                result["blocks"] = sorted(seen.blocks.values(), key=lambda b: b["number"])
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "metering_load.json").write_text(json.dumps(result, indent=2))
                print(f"incomplete run written to {args.out / 'metering_load.json'}",
                      file=sys.stderr)
                raise
            seen.stop.set()
            mins = absorbed(seen, load["minutes"], args.meters)
            minute_count = args.meters * sum(1 for m in mins if not m["boundary"])
            took = sorted(m["checked_s"] for m in mins if m["checked_s"])
            result.update(
                minutes=mins, boundary_published_at=load["boundary_published_at"],
                minute_readings=minute_count,
                minute_readings_per_s=round(args.meters / max(0.2, took[len(took) // 2]), 1),
                cores_in_use_burst=load["cores_in_use_burst"],
                cores_in_use_load=load["cores_in_use_load"], load_seconds=load["load_seconds"],
                dead_letters={"readings": _last(seen, "dead"),
                              "trades": _last(seen, "trades_dead")},
                ingest_metrics=requests.get(f"{ingest.metrics_url}/status", timeout=5).json(),
                bridge_metrics=requests.get(f"{bridge.metrics_url}/status", timeout=5).json())
            result["figures"] = figures(args, load, seen, args.meters, len(events), period,
                                        gas_limit)
            result["blocks"] = sorted(seen.blocks.values(), key=lambda b: b["number"])
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "metering_load.json").write_text(json.dumps(result, indent=2))
            plot(result, seen, args.out / "metering_load.png")
            print_report(result)
            print(f"\nwrote {args.out / 'metering_load.json'} and "
                  f"{args.out / 'metering_load.png'}")
        finally:
            seen.stop.set()
            if publisher is not None:
                publisher.close()
            for service in reversed(services):
                service.stop()
            store.stop()
            net.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
