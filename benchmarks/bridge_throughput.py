"""Bridge throughput, latency and gas on a real 1 s-period Clique network, against a naive
baseline measured in the same run.

    .venv/bin/python benchmarks/bridge_throughput.py [--trades 10000] [--rate N]

Starts its own network (the project's LocalNetwork: three signers and the RPC node, free
ports, a temporary directory), its own Redis (RedisService), deploys Settlement and runs
the bridge as a real process (``python -m bridge``, default settings), then:

1. **burst**: ``--trades`` trades appended to the stream at once; the bridge's ceiling.
2. **paced**: ``--trades`` more at ``--rate`` per second (default 80% of the burst's rate);
   latency from stream entry to the receipt (a block watcher sees each TradeSettled log
   appear at the RPC node).
3. **baseline**: ``--baseline`` trades the naive way: one ``recordTrades([trade])``
   transaction per trade, each receipt awaited before the next (web3's
   ``build_transaction``/``wait_for_transaction_receipt``, another recorder account).
   Every trade waits for its own receipt, so its rate is the same for any count:
   extrapolating it linearly to ``--trades`` is exact up to block-time noise.

Prints the figures and the project's targets, writes ``bridge_throughput.json`` and
``bridge_throughput.png`` under ``--out`` (default ``benchmarks/results/``), and stops every
process it started, also on failure. Trades are the recordings of ``tests/data`` with fresh
trade ids. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from web3 import Web3
from web3.exceptions import Web3Exception

from bridge.config import BridgeSettings, StreamSettings
from bridge.events import EVENT_FIELD
from pilotchain.chain import Sender, connect, wait_for, wait_for_receipt
from pilotchain.config import ChainSettings
from pilotchain.contract import deploy_settlement, save_deployment, settlement_contract
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import TRADE_SETTLED_TOPIC, bytes32_to_uuid
from runner.bridge import BridgeService
from runner.localnet import LocalNetwork
from runner.ports import Ports, free_port
from runner.redis import RedisService, private_connection

DATA = PROJECT_ROOT / "tests" / "data"
STREAM = "bench:trades"
SEED = 1
TARGETS = {"trades_per_s": 500, "fraction_of_bound": 0.80, "ratio_to_baseline": 100}


# --- the trades ---------------------------------------------------------------------------


def make_events(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Recorded gsy-e events with fresh trade ids."""
    pool = [json.loads(line) for path in sorted(DATA.glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]
    events = []
    for _ in range(count):
        event = json.loads(json.dumps(rng.choice(pool)))
        event["trade"]["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        events.append(event)
    return events


def publish(client: redis.Redis, events: Sequence[dict[str, Any]], rate: float | None,
            stream: str = STREAM) -> dict[uuid.UUID, float]:
    """Append events to ``stream`` (all at once, or ``rate`` per second); trade id -> entry
    time (s)."""
    entered: dict[uuid.UUID, float] = {}
    chunk = 500 if rate is None else max(1, int(rate / 20))
    started = time.monotonic()
    for start in range(0, len(events), chunk):
        part = events[start:start + chunk]
        if rate is not None:
            time.sleep(max(0.0, started + start / rate - time.monotonic()))
        pipe = client.pipeline(transaction=False)
        for event in part:
            pipe.xadd(stream, {EVENT_FIELD: json.dumps(event)})
        for event, entry_id in zip(part, pipe.execute(), strict=True):
            entered[uuid.UUID(event["trade"]["id"])] = int(entry_id.split(b"-")[0]) / 1000
    return entered


# --- watching the chain and the bridge ----------------------------------------------------


@dataclass
class Watch:
    """What a watcher thread saw: every block, every settled trade, the bridge's memory."""

    blocks: list[dict[str, Any]] = field(default_factory=list)
    settled_at: dict[uuid.UUID, float] = field(default_factory=dict)
    memory: list[tuple[int, int]] = field(default_factory=list)  # (settled, rss bytes)
    hashes: dict[int, bytes] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)


def watch_chain(w3: Web3, contract: str, watch: Watch, metrics_url: str) -> None:
    """Poll the RPC node every 50 ms; note each new block and the trades it settled."""
    head = w3.eth.block_number
    last_memory = 0.0
    while not watch.stop.is_set():
        try:
            head = _note_blocks(w3, contract, watch, head)
        except (Web3Exception, requests.RequestException):
            pass  # a header announced before its body (geth importing): look again
        if time.monotonic() - last_memory >= 0.5:
            last_memory = time.monotonic()
            try:
                m = requests.get(metrics_url, timeout=2).json()
                watch.memory.append((len(watch.settled_at), m["rss_bytes"]))
            except (requests.RequestException, ValueError, KeyError):
                pass
        watch.stop.wait(0.05)


REORG_DEPTH = 3


def _note_blocks(w3: Web3, contract: str, watch: Watch, head: int) -> int:
    """Record blocks after ``head``, and re-read the last few in case Clique reorganised
    them (a trade of a replaced block reappears in the new one); returns the new head."""
    latest = w3.eth.block_number
    for number in range(max(1, head - REORG_DEPTH + 1), latest + 1):
        seen = time.time()
        block = w3.eth.get_block(number)
        if watch.hashes.get(number) == block["hash"]:
            continue
        watch.hashes[number] = block["hash"]
        logs = w3.eth.get_logs({"blockHash": block["hash"], "address": contract,
                                "topics": [TRADE_SETTLED_TOPIC]})
        for log in logs:
            watch.settled_at.setdefault(bytes32_to_uuid(bytes(log["topics"][1])), seen)
        watch.blocks = [b for b in watch.blocks if b["number"] != number]
        watch.blocks.append({"number": number, "seen": seen, "time": block["timestamp"],
                             "gas_used": block["gasUsed"], "gas_limit": block["gasLimit"],
                             "base_fee": block["baseFeePerGas"], "trades": len(logs),
                             "transactions": len(block["transactions"])})
    return latest


# --- phases -------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by the machine and by named processes between start and stop."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.ticks = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict[str, float]:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        sample = {"machine_busy": (sum(fields) - fields[3] - fields[4]) / self.ticks,
                  "machine_total": sum(fields) / self.ticks}
        for name, pid in self.pids.items():
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                    parts = stat.read().rsplit(")", 1)[1].split()
                sample[name] = (int(parts[11]) + int(parts[12])) / self.ticks
            except (OSError, IndexError, ValueError):
                sample[name] = 0.0
        return sample

    @staticmethod
    def usage(before: dict[str, float], after: dict[str, float], seconds: float
              ) -> dict[str, float]:
        """Cores in use on average over the interval, machine-wide and per process."""
        return {name: round((after[name] - before[name]) / seconds, 2)
                for name in before if name != "machine_total"}


def run_phase(name: str, client: redis.Redis, events: list[dict[str, Any]],
              rate: float | None, watch: Watch, timeout: float, cpu: CpuMeter
              ) -> tuple[dict[str, Any], list[float]]:
    """Publish ``events`` and wait until the chain has them all: the phase's figures and
    its sorted latencies."""
    print(f"{name}: publishing {len(events)} trades "
          f"{'at once' if rate is None else f'at {rate:.0f}/s'}", file=sys.stderr)
    ids = [uuid.UUID(e["trade"]["id"]) for e in events]
    first_block = max((b["number"] for b in watch.blocks), default=0)
    cpu_before, began = cpu.sample(), time.monotonic()
    entered = publish(client, events, rate)
    wait_for(lambda: all(i in watch.settled_at for i in ids), timeout=timeout, interval=0.5,
             what=f"the {name} phase's {len(ids)} trades on chain")
    cores = CpuMeter.usage(cpu_before, cpu.sample(), time.monotonic() - began)
    start = min(entered.values())
    end = max(watch.settled_at[i] for i in ids)
    latencies = sorted(watch.settled_at[i] - entered[i] for i in ids)
    blocks = sorted((b for b in watch.blocks if b["number"] > first_block and b["time"] <= end + 1),
                    key=lambda b: b["number"])
    busy = [b for b in blocks if b["trades"]]
    gas = sum(b["gas_used"] for b in busy)
    # Sustained rate: from the first block with the phase's trades to the last, so the
    # pipeline's fill time (about two blocks) does not count against it.
    settle_times = sorted(watch.settled_at[i] for i in ids)
    first_batch = sum(1 for t in settle_times if t <= settle_times[0] + 0.05)
    steady = (len(ids) - first_batch) / max(1e-9, settle_times[-1] - settle_times[0])
    return {
        "trades": len(ids),
        "offered_rate": rate,
        "seconds": round(end - start, 2),
        "settled_per_s": round(len(ids) / (end - start), 1),
        "sustained_per_s": round(steady, 1),
        "latency_p50_s": round(_quantile(latencies, 0.50), 3),
        "latency_p95_s": round(_quantile(latencies, 0.95), 3),
        "latency_p99_s": round(_quantile(latencies, 0.99), 3),
        "latency_max_s": round(latencies[-1], 3),
        "gas_per_trade": round(gas / len(ids)),
        "blocks": len(busy),
        "mean_block_interval_s": round(_interval(busy), 3),
        "mean_block_gas_used": round(gas / max(1, len(busy))),
        "base_fee_gwei_first": busy[0]["base_fee"] / 1e9 if busy else None,
        "base_fee_gwei_last": busy[-1]["base_fee"] / 1e9 if busy else None,
        "base_fee_gwei_max": max(b["base_fee"] for b in busy) / 1e9 if busy else None,
        "cores_in_use": cores,
        "window": [start, end],
    }, latencies


def run_baseline(w3: Web3, net: LocalNetwork, deployment: Any, events: list[dict[str, Any]]
                 ) -> dict[str, Any]:
    """The naive way: one transaction per trade, each receipt awaited."""
    from pilotchain.trades import parse_event

    operator = net.keys.role("operator").unlock()
    recorder = net.keys.role("faucet").unlock()  # funded, and nothing else sends from it
    contract = settlement_contract(w3, deployment)
    role = contract.functions.RECORDER_ROLE().call()
    grant = contract.functions.grantRole(role, recorder.address).build_transaction(
        {"from": operator.address})
    wait_for_receipt(w3, Sender(w3, operator).send({"to": grant["to"], "data": grant["data"]}))
    print(f"baseline: {len(events)} trades, one transaction each", file=sys.stderr)
    latencies, gas = [], []
    started = time.time()
    for event in events:
        sent = time.time()
        call = contract.functions.recordTrades([parse_event(event).as_contract_tuple()])
        tx = call.build_transaction({
            "from": recorder.address,
            "nonce": w3.eth.get_transaction_count(recorder.address)})
        tx_hash = w3.eth.send_raw_transaction(recorder.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        latencies.append(time.time() - sent)
        gas.append(receipt["gasUsed"])
    seconds = time.time() - started
    latencies.sort()
    return {"trades": len(events), "seconds": round(seconds, 2),
            "settled_per_s": round(len(events) / seconds, 3),
            "latency_p50_s": round(_quantile(latencies, 0.5), 3),
            "latency_p95_s": round(_quantile(latencies, 0.95), 3),
            "gas_per_trade": round(statistics.mean(gas))}


def _quantile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _interval(blocks: Sequence[dict[str, Any]]) -> float:
    if len(blocks) < 2:
        return float("nan")
    return (blocks[-1]["seen"] - blocks[0]["seen"]) / (len(blocks) - 1)


# --- report -------------------------------------------------------------------------------


def summarise(result: dict[str, Any], period: float, gas_limit: int) -> dict[str, Any]:
    """The throughput and latency targets against the figures."""
    burst, paced, baseline = result["burst"], result["paced"], result["baseline"]
    gas_target = gas_limit // 2
    bound = gas_target / burst["gas_per_trade"] / period
    memory = result["memory"]
    sustained = burst["sustained_per_s"]
    checks = {
        "sustained trades/s (burst)": (sustained, f">= {TARGETS['trades_per_s']}",
                                       sustained >= TARGETS["trades_per_s"]),
        "fraction of sustainable bound": (round(sustained / bound, 3),
                                          f">= {TARGETS['fraction_of_bound']}",
                                          sustained / bound >= TARGETS["fraction_of_bound"]),
        "base fee not climbing (burst)": (
            f"{burst['base_fee_gwei_first']:.3g} -> {burst['base_fee_gwei_last']:.3g} gwei",
            "last <= first", burst["base_fee_gwei_last"] <= burst["base_fee_gwei_first"]),
        "ratio to naive baseline": (round(sustained / baseline["settled_per_s"]),
                                    f">= {TARGETS['ratio_to_baseline']}",
                                    sustained / baseline["settled_per_s"]
                                    >= TARGETS["ratio_to_baseline"]),
        "p95 latency (paced)": (paced["latency_p95_s"], f"<= {2 * period + 0.5}",
                                paced["latency_p95_s"] <= 2 * period + 0.5),
        "bridge memory flat": (_memory_growth(memory), "< 10 MB over the run",
                               _memory_growth(memory) < 10),
    }
    return {"sustainable_bound_per_s": round(bound, 1), "gas_target": gas_target,
            "checks": {k: {"value": v, "target": t, "met": ok} for k, (v, t, ok) in
                       checks.items()}}


def _memory_growth(memory: Sequence[tuple[int, int]]) -> float:
    """MB the bridge grew between 2,000 trades settled and the end."""
    after = [rss for settled, rss in memory if settled >= 2000]
    if len(after) < 2:
        return float("nan")
    return round((max(after[len(after) // 2:]) - min(after[:max(1, len(after) // 4)])) / 1e6, 1)


def print_report(result: dict[str, Any]) -> None:
    print(f"\nBridge throughput on a {result['period_s']:.0f} s Clique network, gas limit "
          f"{result['gas_limit']:,} (target {result['summary']['gas_target']:,})")
    header = (f"{'':<10}{'trades':>8}{'trades/s':>10}{'sustained':>10}{'p50 s':>8}"
              f"{'p95 s':>8}{'gas/trade':>11}")
    print(header)
    for name in ("burst", "paced", "baseline"):
        r = result[name]
        print(f"{name:<10}{r['trades']:>8}{r['settled_per_s']:>10}"
              f"{r.get('sustained_per_s', '-'):>10}{r['latency_p50_s']:>8}"
              f"{r['latency_p95_s']:>8}{r['gas_per_trade']:>11}")
    b = result["baseline"]
    print(f"baseline extrapolated to {result['burst']['trades']} trades: "
          f"{result['burst']['trades'] / b['settled_per_s'] / 3600:.1f} h "
          f"(bridge: {result['burst']['seconds']:.1f} s)")
    print(f"sustainable bound (gas target / gas per trade / period): "
          f"{result['summary']['sustainable_bound_per_s']}/s")
    for name in ("burst", "paced"):
        r = result[name]
        print(f"{name}: mean block interval {r['mean_block_interval_s']} s, mean gas per busy "
              f"block {r['mean_block_gas_used'] / 1e6:.1f} M, cores in use {r['cores_in_use']}")
    for name, check in result["summary"]["checks"].items():
        print(f"  {'ok  ' if check['met'] else 'MISS'} {name}: {check['value']} "
              f"(target {check['target']})")


def plot(result: dict[str, Any], watch: Watch, latencies: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    t0 = result["burst"]["window"][0]
    settled = sorted(watch.settled_at.values())
    ax = axes[0][0]
    ax.plot([t - t0 for t in settled], range(1, len(settled) + 1), label="bridge")
    rate = result["baseline"]["settled_per_s"]
    span = settled[-1] - t0
    ax.plot([0, span], [0, rate * span], label=f"naive baseline ({rate:.2f}/s)")
    ax.set(xlabel="seconds", ylabel="trades settled", title="Settled trades")
    ax.legend()
    ax = axes[0][1]
    blocks = [b for b in watch.blocks if b["seen"] >= t0 - 2]
    ax.bar([b["seen"] - t0 for b in blocks], [b["gas_used"] / 1e6 for b in blocks], width=0.8)
    ax.axhline(result["summary"]["gas_target"] / 1e6, color="red", linestyle="--",
               label="gas target")
    ax.set(xlabel="seconds", ylabel="gas used per block (M)", title="Blocks and base fee")
    twin = ax.twinx()
    twin.plot([b["seen"] - t0 for b in blocks], [b["base_fee"] / 1e9 for b in blocks],
              color="black", label="base fee")
    twin.set_ylabel("base fee (gwei)")
    ax.legend(loc="upper left")
    ax = axes[1][0]
    ax.plot(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))])
    ax.axvline(2 * result["period_s"] + 0.5, color="red", linestyle="--",
               label="2 periods + 0.5 s")
    ax.set(xlabel="stream entry -> receipt (s)", ylabel="fraction of trades",
           title=f"Latency at {result['paced']['offered_rate']:.0f} trades/s")
    ax.legend()
    ax = axes[1][1]
    ax.plot([s for s, _ in watch.memory], [rss / 1e6 for _, rss in watch.memory])
    ax.set(xlabel="trades settled", ylabel="bridge RSS (MB)", title="Bridge memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --- main ---------------------------------------------------------------------------------


def network_settings(home: Path, gas_limit: int, period: int = 1) -> ChainSettings:
    return dataclasses.replace(ChainSettings(), block_period=period, gas_limit=gas_limit,
                               keys_dir=home / "keys", genesis_file=home / "genesis.json",
                               data_dir=home / "data")


@dataclass
class BridgeStack:
    """A running network, Redis, deployed Settlement and bridge process (see bridge_stack)."""

    home: Path
    net: LocalNetwork
    store: RedisService
    w3: Web3
    deployment: Any
    settings: BridgeSettings
    service: BridgeService


@contextmanager
def bridge_stack(home: Path, gas_limit: int, gas_budget: float, *, stream: str = STREAM,
                 log_copy: Path | None = None, period: int = 1,
                 bridge_options: dict[str, Any] | None = None) -> Iterator[BridgeStack]:
    """Start a ``period``-second network, Redis, Settlement and the bridge on ``stream``
    under ``home`` (``bridge_options``: BridgeSettings fields other than the defaults); stop
    every process on leaving, also on failure (the bridge's log is copied to ``log_copy``
    first)."""
    net = LocalNetwork(network_settings(home / "net", gas_limit, period),
                       ChainSettings().geth_bin_dir, Ports.free(), fast_keys=True)
    store = RedisService(private_connection(), home / "redis", home / "pids")
    service: BridgeService | None = None
    try:
        net.init()
        net.start()
        net.wait_for_block(1, timeout=90)
        store.start()
        w3 = connect(net.rpc_url)
        deployment = deploy_settlement(w3, net.keys.role("operator").unlock(),
                                       net.keys.role("bridge").address)
        save_deployment(deployment, home / "settlement.json")
        chain = dataclasses.replace(net.settings, rpc_url_override=net.rpc_url,
                                    deployment_file_override=home / "settlement.json")
        settings = BridgeSettings(chain=chain, streams=StreamSettings(store.url, stream),
                                  metrics_port=free_port(), gas_budget=gas_budget,
                                  **(bridge_options or {}))
        service = BridgeService(settings, {**_base_env(), **settings.to_env()}, home / "pids")
        service.start()
        yield BridgeStack(home, net, store, w3, deployment, settings, service)
    finally:
        if service is not None:
            service.stop()
            if log_copy is not None and service.log_file.is_file():
                log_copy.parent.mkdir(parents=True, exist_ok=True)
                log_copy.write_bytes(service.log_file.read_bytes())
        store.stop()
        net.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=None,
                        help="offered trades/s in the paced phase (default: 80%% of the "
                             "burst phase's rate, a load the bridge can sustain)")
    parser.add_argument("--baseline", type=int, default=20, help="trades for the baseline")
    parser.add_argument("--gas-limit", type=int, default=ChainSettings().gas_limit)
    parser.add_argument("--gas-budget", type=float, default=BridgeSettings().gas_budget,
                        help="the bridge's BRIDGE_GAS_BUDGET")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    watch = Watch()
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp, \
            bridge_stack(Path(tmp), args.gas_limit, args.gas_budget,
                         log_copy=args.out / "bridge_throughput.bridge.log") as stack:
        try:
            net, w3, deployment, settings = stack.net, stack.w3, stack.deployment, stack.settings
            watcher = threading.Thread(target=watch_chain, daemon=True, args=(
                connect(net.rpc_url), deployment.address, watch,
                f"{settings.metrics_url}/status"))
            watcher.start()
            client = redis.Redis.from_url(stack.store.url)
            pids = {name: net.process(name).pid for name in net.node_names()}
            cpu = CpuMeter({**pids, "bridge": stack.service.process.pid,
                            "redis": stack.store.process.pid})
            timeout = 120 + args.trades / 50
            result: dict[str, Any] = {"period_s": 1.0, "gas_limit": args.gas_limit,
                                      "gas_budget": args.gas_budget}
            result["burst"], _ = run_phase("burst", client, make_events(args.trades, rng),
                                           None, watch, timeout, cpu)
            rate = args.rate or round(0.8 * result["burst"]["settled_per_s"])
            result["paced"], latencies = run_phase("paced", client,
                                                   make_events(args.trades, rng), rate,
                                                   watch, timeout, cpu)
            result["bridge_metrics"] = requests.get(f"{settings.metrics_url}/status",
                                                    timeout=5).json()
            result["baseline"] = run_baseline(w3, net, deployment,
                                              make_events(args.baseline, rng))
            watch.stop.set()
            watcher.join(timeout=10)
            result["memory"] = watch.memory
            result["blocks"] = sorted(watch.blocks, key=lambda b: b["number"])
            result["summary"] = summarise(result, 1.0, args.gas_limit)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bridge_throughput.json").write_text(json.dumps(result, indent=2))
            plot(result, watch, latencies, args.out / "bridge_throughput.png")
            print_report(result)
            print(f"\nwrote {args.out / 'bridge_throughput.json'} and "
                  f"{args.out / 'bridge_throughput.png'}")
        finally:
            watch.stop.set()
    return 0


def _base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp")}


if __name__ == "__main__":
    sys.exit(main())
