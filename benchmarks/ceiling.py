"""The machine's ceiling: sustained trades/s against the block gas limit on one 2-core machine
(three Clique signers, the archive RPC node, Redis and the bridge all on it), and a
100,000-trade slot published at once.

    .venv/bin/python benchmarks/ceiling.py [--gas-limits 60,90,120,180,240] [--trades 20000]
        [--all-steps]
    .venv/bin/python benchmarks/ceiling.py --burst 100000 [--period 5] [--gas-limit 60000000]

**Ladder** (default). For each gas limit (millions, ascending) a fresh 1 s-period network
(``bridge_throughput.bridge_stack``: LocalNetwork, RedisService, Settlement, the bridge as a
process) and one burst of ``--trades`` trades (``bridge_throughput.run_phase``). Per step:
sustained trades/s (first settled batch to the last), the gas-target bound
(limit / 2 / gas per trade / period) and the fraction of it reached, base fee first / max /
last, block intervals as the RPC node saw them (p95) and blocks sealed late (header timestamp
more than one period after its parent), how far the RPC node fell behind the furthest signer,
the RPC node's transaction pool, CPU seconds per process with its children (each geth node,
the bridge, Redis) and cores busy, the bridge's RSS. The first step is the baseline: every
ratio is against it, measured in the same run. The ladder stops early once a step no longer
raises throughput by 5 % while the nodes fall behind or the cores are saturated (unless
``--all-steps``).

The bridge's gas budget stays 1.0 (one gas target per block: the base fee must not climb);
``BRIDGE_MAX_IN_FLIGHT`` is raised with the limit so that three blocks' worth of batches can
be in flight (a batch is sent, mined one block later and final one block after that, with
``BRIDGE_CONFIRMATIONS`` 1), else the in-flight cap, not the chain, would bound big blocks.

**Burst** (``--burst N``). N trades appended to the stream at once on the pilot's default
chain (``--period`` 5 s, ``--gas-limit`` 60,000,000, the bridge with default settings, as
``./scripts/up`` runs it): time until all are on chain, the bridge's RSS over time (its
``BRIDGE_MAX_QUEUED`` bounds what it holds), base fee and gas per block over time.

Prints a table, writes ``ceiling.json``/``.png`` (or ``slot_burst.json``/``.png``) under
``--out`` (default ``benchmarks/results/``) with the load average before and after, and stops
every process it started, also on failure. Needs matplotlib. Heavy: run it under
``flock /work/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from bridge_throughput import (
    SEED,
    BridgeStack,
    Watch,
    _quantile,
    bridge_stack,
    make_events,
    run_phase,
    watch_chain,
)
from db_compare import load_average
from metering_load import TreeCpuMeter
from web3.exceptions import Web3Exception
from web3.types import RPCEndpoint

from bridge.config import BridgeSettings
from bridge.gas import max_trades_for_gas
from pilotchain.chain import connect
from pilotchain.config import ChainSettings
from pilotchain.contract import CALLDATA_BYTES_PER_TRADE
from pilotchain.errors import ChainError
from pilotchain.settings import PROJECT_ROOT
from runner.localnet import BOOTNODE, RPC_NODE

# What a plain recorded trade costs (docs/chain.md); only sizes the in-flight cap up front,
# the bound itself is computed from the gas the receipts show.
TYPICAL_GAS_PER_TRADE = 32_000
# Blocks a batch spends in flight: sent, mined a block later, final one block after that.
BLOCKS_IN_FLIGHT = 3
SATURATED_CORES = 1.8  # of 2: the machine has no CPU left for more
BRIDGE_CORE = 0.85  # the bridge is one Python process: one core at most
ENOUGH_GAIN = 1.05  # a step that raises throughput by less has hit a ceiling


# --- sampling what run_phase does not see ---------------------------------------------------


@dataclass
class Samples:
    """Every half second: the RPC node's pool, the heads of the signers and the RPC node,
    the bridge's metrics."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def sample_nodes(stack: BridgeStack, samples: Samples) -> None:
    """Poll until ``samples.stop``; own connections, as web3 objects are not shared across
    threads."""
    net = stack.net
    signers = [n for n in net.node_names() if n not in (BOOTNODE, RPC_NODE)]
    nodes = {RPC_NODE: connect(net.rpc_url),
             **{name: connect(str(net.ipc_path(name))) for name in signers}}
    metrics_url = f"{stack.settings.metrics_url}/status"
    while not samples.stop.is_set():
        row: dict[str, Any] = {"t": time.time()}
        try:
            heads = {name: w3.eth.block_number for name, w3 in nodes.items()}
            row["rpc_head"] = heads.pop(RPC_NODE)
            row["signer_head"] = max(heads.values())
            pool = nodes[RPC_NODE].provider.make_request(RPCEndpoint("txpool_status"), [])["result"]
            row["pool"] = int(pool["pending"], 16) + int(pool["queued"], 16)
        except (Web3Exception, requests.RequestException, OSError, KeyError, TypeError):
            pass  # a node busy importing: the next sample will do
        try:
            m = requests.get(metrics_url, timeout=2).json()
            row.update(rss=m["rss_bytes"], in_flight=m["in_flight_transactions"],
                       pending=m["pending"], base_fee_gwei=m["base_fee_gwei"])
        except (requests.RequestException, ValueError, KeyError):
            pass
        samples.rows.append(row)
        samples.stop.wait(0.5)


def in_window(rows: Sequence[dict[str, Any]], window: Sequence[float], key: str) -> list[Any]:
    return [r[key] for r in rows if window[0] <= r["t"] <= window[1] + 1 and key in r]


def bridge_options(gas_limit: int, period: int) -> dict[str, Any]:
    """In-flight cap for ``gas_limit``: enough batches for BLOCKS_IN_FLIGHT blocks at the gas
    target, never below the default."""
    batch = min(BridgeSettings().max_batch, max_trades_for_gas(gas_limit))
    per_block = math.ceil(gas_limit / 2 / (batch * TYPICAL_GAS_PER_TRADE))
    return {"max_in_flight": max(BridgeSettings().max_in_flight, BLOCKS_IN_FLIGHT * per_block)}


def _own_cpu() -> float:
    """CPU seconds of this process (its watcher threads poll the RPC node and the bridge);
    not a child of anything measured, so counted apart from the stack."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- one run ----------------------------------------------------------------------------------


def measure(home: Path, gas_limit: int, period: int, trades: int, options: dict[str, Any],
            rng: random.Random, log_copy: Path) -> dict[str, Any]:
    """A fresh stack at ``gas_limit``, one burst of ``trades``; the step's figures."""
    watch, samples = Watch(), Samples()
    load_before = load_average()
    with bridge_stack(home, gas_limit, BridgeSettings().gas_budget, period=period,
                      bridge_options=options, log_copy=log_copy) as stack:
        threads = [
            threading.Thread(target=watch_chain, daemon=True, args=(
                connect(stack.net.rpc_url), stack.deployment.address, watch,
                f"{stack.settings.metrics_url}/status")),
            threading.Thread(target=sample_nodes, daemon=True, args=(stack, samples))]
        try:
            for thread in threads:
                thread.start()
            client = redis.Redis.from_url(stack.store.url)
            pids = {name: stack.net.process(name).pid for name in stack.net.node_names()}
            cpu = TreeCpuMeter({**pids, "bridge": stack.service.process.pid,
                                "redis": stack.store.process.pid})
            events = make_events(trades, rng)
            cpu_before, self_before = cpu.sample(), _own_cpu()
            phase, latencies = run_phase(f"{gas_limit / 1e6:.0f}M", client, events, None,
                                         watch, 300 + trades * period / 50, cpu)
            cpu_after = {**cpu.sample(), "benchmark": _own_cpu()}
            cpu_before["benchmark"] = self_before
        finally:
            watch.stop.set()
            samples.stop.set()
            for thread in threads:
                thread.join(timeout=10)
    return figures(gas_limit, period, options, phase, latencies, watch, samples,
                   {name: round(cpu_after[name] - cpu_before[name], 2) for name in cpu_before
                    if name != "machine_total"}, load_before)


def figures(gas_limit: int, period: int, options: dict[str, Any], phase: dict[str, Any],
            latencies: Sequence[float], watch: Watch, samples: Samples,
            cpu_seconds: dict[str, float], load_before: list[float]) -> dict[str, Any]:
    window = phase["window"]
    blocks = sorted((b for b in watch.blocks if window[0] - period <= b["seen"] <= window[1]),
                    key=lambda b: b["number"])
    seen_gaps = sorted(b["seen"] - a["seen"] for a, b in itertools.pairwise(blocks))
    late = sum(1 for a, b in itertools.pairwise(blocks) if b["time"] - a["time"]
               > period)
    lag = [s - r for s, r in zip(in_window(samples.rows, window, "signer_head"),
                                 in_window(samples.rows, window, "rpc_head"), strict=False)]
    pool = in_window(samples.rows, window, "pool")
    rss = in_window(samples.rows, window, "rss")
    in_flight = in_window(samples.rows, window, "in_flight")
    bound = gas_limit / 2 / phase["gas_per_trade"] / period
    sustained = phase["sustained_per_s"]
    cores = phase["cores_in_use"]
    geth_cores = round(sum(v for k, v in cores.items()
                           if k not in ("machine_busy", "bridge", "redis")), 2)
    # The machine is shared: what the stack and this benchmark did not use went to others.
    seconds = window[1] - window[0]
    watcher = round(cpu_seconds.get("benchmark", 0.0) / seconds, 2) if seconds > 0 else 0.0
    ours = round(sum(v for k, v in cores.items() if k != "machine_busy"), 2)
    step = {
        "gas_limit": gas_limit, "period_s": period, "bridge_options": options,
        "trades": phase["trades"], "seconds": phase["seconds"],
        "sustained_per_s": sustained, "settled_per_s": phase["settled_per_s"],
        "bound_per_s": round(bound, 1), "fraction_of_bound": round(sustained / bound, 3),
        "gas_per_trade": phase["gas_per_trade"],
        "calldata_kb_per_s": round(sustained * CALLDATA_BYTES_PER_TRADE / 1e3, 1),
        "latency_p50_s": phase["latency_p50_s"], "latency_p95_s": phase["latency_p95_s"],
        "base_fee_gwei": {"first": phase["base_fee_gwei_first"],
                          "max": phase["base_fee_gwei_max"],
                          "last": phase["base_fee_gwei_last"]},
        "blocks": len(blocks), "busy_blocks": phase["blocks"],
        "mean_block_gas_used": phase["mean_block_gas_used"],
        "block_interval_p50_s": round(_quantile(seen_gaps, 0.5), 2) if seen_gaps else None,
        "block_interval_p95_s": round(_quantile(seen_gaps, 0.95), 2) if seen_gaps else None,
        "late_blocks": late,
        "rpc_behind_max_blocks": max(lag, default=0),
        "pool_max": max(pool, default=0), "pool_last": pool[-1] if pool else 0,
        "bridge_in_flight_max": max(in_flight, default=0),
        "bridge_in_flight_mean": round(sum(in_flight) / len(in_flight), 1) if in_flight else 0,
        "bridge_rss_max_mb": round(max(rss, default=0) / 1e6, 1),
        "cores": cores, "geth_cores": geth_cores, "our_cores": ours,
        "benchmark_cores": watcher,
        "other_cores": round(cores["machine_busy"] - ours - watcher, 2), "cpu_seconds": cpu_seconds,
        "load_before": load_before, "load_after": load_average(),
        "block_series": [{k: b[k] for k in ("number", "seen", "time", "gas_used", "base_fee",
                                             "trades")} for b in blocks],
        "samples": [r for r in samples.rows if window[0] - 5 <= r["t"] <= window[1] + 5],
    }
    step["limits"] = what_limits(step)
    return step


def what_limits(step: dict[str, Any]) -> list[str]:
    """Why the step settled no faster, most binding first."""
    found = []
    busy = step["cores"]["machine_busy"]
    if busy >= SATURATED_CORES:
        found.append(f"CPU: {busy} of 2 cores busy (geth nodes {step['geth_cores']}, "
                     f"bridge {step['cores'].get('bridge', 0)}, other work "
                     f"{step['other_cores']})")
    if step["cores"].get("bridge", 0) >= BRIDGE_CORE:
        found.append(f"the bridge: {step['cores']['bridge']} of its one core")
    if step["late_blocks"] > 0.1 * max(1, step["blocks"]) or step["rpc_behind_max_blocks"] >= 2:
        found.append(f"block production/import: {step['late_blocks']} of {step['blocks']} "
                     f"blocks late, RPC node up to {step['rpc_behind_max_blocks']} behind")
    if step["fraction_of_bound"] >= 0.85:
        found.append(f"the gas target ({step['fraction_of_bound']:.0%} of its bound)")
    if not found:
        cap = step["bridge_options"].get("max_in_flight", BridgeSettings().max_in_flight)
        found.append(f"the bridge's pipeline: {step['bridge_in_flight_mean']} of {cap} "
                     f"transactions in flight on average, {busy} cores busy")
    return found


# --- the ladder -------------------------------------------------------------------------------


def ladder(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(SEED)
    steps: list[dict[str, Any]] = []
    for millions in args.gas_limits:
        gas_limit = int(millions * 1_000_000)
        options = bridge_options(gas_limit, 1)
        print(f"step {millions:g}M: {args.trades} trades, {options}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
            try:
                step = measure(Path(tmp), gas_limit, 1, args.trades, options, rng,
                               args.out / f"ceiling.{millions:g}M.bridge.log")
            except ChainError as error:  # the nodes or the bridge could not finish in time
                steps.append({"gas_limit": gas_limit, "failed": str(error)})
                print(f"step {millions:g}M failed: {error}", file=sys.stderr)
                break
        steps.append(step)
        print_step(step, steps[0])
        if not args.all_steps and len(steps) > 1 and "failed" not in steps[-2] and \
                step["sustained_per_s"] < ENOUGH_GAIN * steps[-2]["sustained_per_s"] and \
                any(not m.startswith("the gas target") for m in step["limits"]):
            print("throughput no longer rises: stopping the ladder", file=sys.stderr)
            break
    done = [s for s in steps if "failed" not in s]
    base = done[0]
    for s in done:
        s["ratio_to_baseline"] = ratio(s["sustained_per_s"], base["sustained_per_s"])
    best = max(done, key=lambda s: s["sustained_per_s"])
    return {"mode": "ladder", "trades_per_step": args.trades, "baseline_gas_limit":
            base["gas_limit"], "steps": steps, "best": {
                "gas_limit": best["gas_limit"], "sustained_per_s": best["sustained_per_s"],
                "bound_per_s": best["bound_per_s"], "limits": best["limits"]},
            "target_per_s": 1500, "target_met": best["sustained_per_s"] >= 1500}


def ratio(value: float, baseline: float) -> float | None:
    """``value`` over the baseline; None when a step too small to span two blocks has no
    sustained rate."""
    return round(value / baseline, 2) if baseline else None


def print_step(step: dict[str, Any], base: dict[str, Any]) -> None:
    fee = step["base_fee_gwei"]
    print(f"{step['gas_limit'] / 1e6:>5.0f}M {step['sustained_per_s']:>8.0f}/s "
          f"(x{ratio(step['sustained_per_s'], base['sustained_per_s'])} vs "
          f"{base['gas_limit'] / 1e6:.0f}M) bound {step['bound_per_s']:.0f}/s "
          f"({step['fraction_of_bound']:.0%}) base fee {fee['first']:.3g}->{fee['max']:.3g}->"
          f"{fee['last']:.3g} gwei, cores {step['cores']['machine_busy']} "
          f"(geth {step['geth_cores']}, bridge {step['cores'].get('bridge')}, others "
          f"{step['other_cores']}), "
          f"interval p95 {step['block_interval_p95_s']} s, late {step['late_blocks']}/"
          f"{step['blocks']}, rpc behind {step['rpc_behind_max_blocks']}, pool max "
          f"{step['pool_max']}, rss {step['bridge_rss_max_mb']} MB\n"
          f"       limits: {'; '.join(step['limits'])}", flush=True)


def plot_ladder(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s in result["steps"] if "failed" not in s]
    limits = [s["gas_limit"] / 1e6 for s in steps]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    ax.plot(limits, [s["sustained_per_s"] for s in steps], "o-", label="sustained")
    ax.plot(limits, [s["bound_per_s"] for s in steps], "--", label="gas-target bound")
    ax.axhline(result["target_per_s"], color="grey", linestyle=":", label="target 1,500/s")
    ax.set(xlabel="gas limit (M)", ylabel="trades/s", title="Throughput, 1 s blocks")
    ax.legend()
    ax = axes[1]
    for key, style in (("first", "o:"), ("max", "o-"), ("last", "o--")):
        ax.plot(limits, [s["base_fee_gwei"][key] for s in steps], style, label=key)
    ax.set(xlabel="gas limit (M)", ylabel="base fee (gwei)", title="Base fee during the burst")
    ax.legend()
    ax = axes[2]
    bottom = [0.0] * len(steps)
    for name, label in (("geth_cores", "geth nodes"), ("bridge", "bridge"), ("redis", "redis"),
                        ("benchmark_cores", "this benchmark's watchers"),
                        ("other_cores", "other work on the machine")):
        values = [s.get(name, 0) if name.endswith("_cores") else s["cores"].get(name, 0)
                  for s in steps]
        ax.bar(limits, values, width=[8] * len(steps), bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.plot(limits, [s["cores"]["machine_busy"] for s in steps], "ko-", label="machine")
    ax.axhline(2, color="red", linestyle="--", label="2 cores")
    ax.set(xlabel="gas limit (M)", ylabel="cores busy", title="CPU during the burst")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --- the slot burst ---------------------------------------------------------------------------


def slot_burst(args: argparse.Namespace) -> dict[str, Any]:
    # The bridge's defaults, as ./scripts/up runs it, unless --max-in-flight says otherwise.
    options: dict[str, Any] = {"max_in_flight": args.max_in_flight} if args.max_in_flight \
        else {}
    with tempfile.TemporaryDirectory(prefix="slot-burst-") as tmp:
        step = measure(Path(tmp), args.gas_limit, args.period, args.burst, options,
                       random.Random(SEED), args.out / f"{args.name}.bridge.log")
    rss = [r["rss"] for r in step["samples"] if "rss" in r]
    return {"mode": "burst", **step, "bridge_rss_first_mb": round(rss[0] / 1e6, 1)
            if rss else None, "max_queued": BridgeSettings().max_queued}


def print_burst(result: dict[str, Any]) -> None:
    fee = result["base_fee_gwei"]
    print(f"\n{result['trades']:,} trades at once, {result['period_s']} s blocks, gas limit "
          f"{result['gas_limit']:,}: all on chain after {result['seconds']} s "
          f"({result['seconds'] / 60:.1f} min, {result['busy_blocks']} blocks with trades); "
          f"sustained {result['sustained_per_s']}/s of a {result['bound_per_s']}/s bound "
          f"({result['fraction_of_bound']:.0%}); bridge RSS {result['bridge_rss_first_mb']} -> "
          f"peak {result['bridge_rss_max_mb']} MB (BRIDGE_MAX_QUEUED {result['max_queued']}); "
          f"base fee {fee['first']:.3g} -> max {fee['max']:.3g} -> {fee['last']:.3g} gwei; "
          f"cores busy {result['cores']['machine_busy']}; latency p50 "
          f"{result['latency_p50_s']} s, p95 {result['latency_p95_s']} s")


def plot_burst(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = result["block_series"]
    t0 = blocks[0]["seen"] if blocks else 0
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    done, total = [], 0
    for b in blocks:
        total += b["trades"]
        done.append(total)
    ax.plot([b["seen"] - t0 for b in blocks], done)
    ax.set(xlabel="seconds", ylabel="trades on chain",
           title=f"{result['trades']:,} trades published at once")
    ax = axes[1]
    ax.bar([b["seen"] - t0 for b in blocks], [b["gas_used"] / 1e6 for b in blocks],
           width=result["period_s"] * 0.8, label="gas used")
    ax.axhline(result["gas_limit"] / 2e6, color="red", linestyle="--", label="gas target")
    ax.set(xlabel="seconds", ylabel="gas per block (M)", title="Blocks and base fee")
    ax.legend(loc="lower left")
    twin = ax.twinx()
    twin.plot([b["seen"] - t0 for b in blocks], [b["base_fee"] / 1e9 for b in blocks],
              color="black")
    twin.set_ylabel("base fee (gwei)")
    ax = axes[2]
    rows = [r for r in result["samples"] if "rss" in r]
    ax.plot([r["t"] - t0 for r in rows], [r["rss"] / 1e6 for r in rows])
    ax.set(xlabel="seconds", ylabel="bridge RSS (MB)", title="Bridge memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gas-limits", type=lambda s: [float(x) for x in s.split(",")],
                        default=[60, 90, 120, 180, 240, 360],
                        help="gas limits in millions, ascending; the first is the baseline")
    parser.add_argument("--trades", type=int, default=20_000, help="trades per step")
    parser.add_argument("--all-steps", action="store_true",
                        help="run every step, also after throughput stopped rising (on a "
                             "shared machine one step can be unlucky)")
    parser.add_argument("--burst", type=int, default=0,
                        help="instead of the ladder: this many trades at once on one chain")
    parser.add_argument("--period", type=int, default=ChainSettings().block_period,
                        help="block period for --burst (default: the pilot's)")
    parser.add_argument("--gas-limit", type=int, default=ChainSettings().gas_limit,
                        help="gas limit for --burst (default: the pilot's)")
    parser.add_argument("--max-in-flight", type=int, default=0,
                        help="BRIDGE_MAX_IN_FLIGHT for --burst (default: the bridge's)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.burst:
        default = (args.gas_limit, args.period, args.max_in_flight) == (
            ChainSettings().gas_limit, ChainSettings().block_period, 0)
        name = args.name = "slot_burst" if default else \
            f"slot_burst.{args.gas_limit // 1_000_000}M.{args.period}s.{args.max_in_flight}"
        result = slot_burst(args)
        plot_burst(result, args.out / f"{name}.png")
        print_burst(result)
    else:
        result = ladder(args)
        name = "ceiling"
        plot_ladder(result, args.out / f"{name}.png")
        best = result["best"]
        print(f"\nbest: {best['sustained_per_s']}/s at gas limit {best['gas_limit']:,} "
              f"(bound {best['bound_per_s']}/s); limits: {'; '.join(best['limits'])}; "
              f"target 1,500/s {'met' if result['target_met'] else 'NOT met'}")
    result["wall_seconds"] = round(time.time() - started, 1)
    result["uptime_load_average"] = load_average()
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / (name + '.json')} and {args.out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
