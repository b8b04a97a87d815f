"""Bridge latency at every load on a real 1 s-period Clique network: today's batching
against the old one (full batches only), both measured in the same run.

    .venv/bin/python benchmarks/bridge_latency.py [--loads 10,100,500,max] [--seconds 30]

For each bridge (``old``: ``BRIDGE_SMALL_BATCH=0``, ``BRIDGE_MAX_IN_FLIGHT=12``, the
settings before small batches; ``new``: the defaults) it starts its own network, Redis,
Settlement and bridge process (``bridge_throughput.bridge_stack``), then:

1. **burst**: ``--burst`` trades appended at once: the ceiling, sustained trades/s against
   the gas-target bound (gas target / gas per trade / period).
2. **each load** of ``--loads`` in trades/s offered, for ``--seconds`` (at least 30 s, so
   300 trades at 10/s and 15,000 at 500/s); ``max`` is offered at 90% of the gas-target
   bound, the throughput the bridge must sustain. Latency is stream entry (the entry id's
   time) to the receipt seen at the RPC node (one confirmation), per trade; p50/p95/p99.

Every phase waits until the chain has all its trades, so each starts with an empty
pipeline. Prints the figures and the ratios new/old, writes ``bridge_latency.json`` and
``bridge_latency.png`` under ``--out`` (default ``benchmarks/results/``) and stops every
process it started, also on failure. The machine's load average is recorded before and
after. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from bridge_throughput import CpuMeter, Watch, bridge_stack, make_events, run_phase, watch_chain

from bridge.config import BridgeSettings
from pilotchain.chain import connect
from pilotchain.config import ChainSettings
from pilotchain.settings import PROJECT_ROOT

SEED = 2
PERIOD = 1.0
P95_TARGET_S = 2.5
BOUND_TARGET = 0.90
# The bridge before small batches: full batches at any load, 12 transactions in flight.
OLD = {"small_batch": 0, "max_in_flight": 12}


def parse_loads(text: str) -> list[str]:
    loads = [part.strip() for part in text.split(",") if part.strip()]
    for load in loads:
        if load != "max" and not float(load) > 0:
            raise argparse.ArgumentTypeError(f"a load is trades/s above 0 or 'max', not {load}")
    return loads


def measure(name: str, overrides: dict[str, Any], args: argparse.Namespace,
            rng: random.Random) -> dict[str, Any]:
    """One bridge: its burst, then every load; the figures and each load's latencies."""
    watch = Watch()
    result: dict[str, Any] = {"settings": overrides, "loads": {}}
    with tempfile.TemporaryDirectory(prefix=f"bridge-latency-{name}-") as tmp, \
            bridge_stack(Path(tmp), args.gas_limit, BridgeSettings().gas_budget,
                         log_copy=args.out / f"bridge_latency.{name}.log",
                         bridge_options=overrides) as stack:
        watcher = threading.Thread(target=watch_chain, daemon=True, args=(
            connect(stack.net.rpc_url), stack.deployment.address, watch,
            f"{stack.settings.metrics_url}/status"))
        watcher.start()
        try:
            client = redis.Redis.from_url(stack.store.url)
            pids = {node: stack.net.process(node).pid for node in stack.net.node_names()}
            cpu = CpuMeter({**pids, "bridge": stack.service.process.pid})
            burst, _ = run_phase(f"{name} burst", client, make_events(args.burst, rng), None,
                                 watch, 120 + args.burst / 50, cpu)
            bound = args.gas_limit // 2 / burst["gas_per_trade"] / PERIOD
            result["burst"] = {**burst, "bound_per_s": round(bound, 1),
                               "fraction_of_bound": round(burst["sustained_per_s"] / bound, 3)}
            for load in args.loads:
                rate = BOUND_TARGET * bound if load == "max" else float(load)
                count = max(1, math.ceil(rate * args.seconds))
                figures, latencies = run_phase(f"{name} {load}/s", client,
                                               make_events(count, rng), rate, watch,
                                               120 + count / 50, cpu)
                figures["latencies"] = [round(x, 3) for x in latencies]
                result["loads"][load] = figures
        finally:
            watch.stop.set()
            watcher.join(timeout=10)
    return result


def compare(result: dict[str, Any], loads: Sequence[str]) -> dict[str, Any]:
    """The targets and the ratios new/old."""
    new, old = result["new"], result["old"]
    rows = {}
    for load in loads:
        n, o = new["loads"][load], old["loads"][load]
        rows[load] = {
            "offered_per_s": round(n["offered_rate"], 1),
            "new_p95_s": n["latency_p95_s"], "old_p95_s": o["latency_p95_s"],
            "p95_new_over_old": round(n["latency_p95_s"] / o["latency_p95_s"], 3),
            "p95_target_met": n["latency_p95_s"] <= P95_TARGET_S,
        }
    saturation = new["burst"]["sustained_per_s"]
    return {
        "loads": rows,
        "saturation_new_per_s": saturation,
        "saturation_old_per_s": old["burst"]["sustained_per_s"],
        # A burst too small to span two blocks has no sustained rate (0): no ratio then.
        "saturation_new_over_old": (round(saturation / old["burst"]["sustained_per_s"], 3)
                                    if old["burst"]["sustained_per_s"] else None),
        "bound_per_s": new["burst"]["bound_per_s"],
        "fraction_of_bound": new["burst"]["fraction_of_bound"],
        "bound_target_met": new["burst"]["fraction_of_bound"] >= BOUND_TARGET,
    }


def print_report(result: dict[str, Any], loads: Sequence[str]) -> None:
    print(f"\nBridge latency on a {PERIOD:.0f} s Clique network, gas limit "
          f"{result['gas_limit']:,}; stream entry -> receipt (one confirmation)")
    print(f"{'load /s':>10}{'bridge':>7}{'trades':>8}{'settled/s':>10}{'p50 s':>8}"
          f"{'p95 s':>8}{'p99 s':>8}{'max s':>8}{'gas/trade':>10}")
    for load in loads:
        for name in ("old", "new"):
            r = result[name]["loads"][load]
            print(f"{r['offered_rate']:>10.0f}{name:>7}{r['trades']:>8}{r['settled_per_s']:>10}"
                  f"{r['latency_p50_s']:>8}{r['latency_p95_s']:>8}{r['latency_p99_s']:>8}"
                  f"{r['latency_max_s']:>8}{r['gas_per_trade']:>10}")
    summary = result["summary"]
    for name in ("old", "new"):
        b = result[name]["burst"]
        print(f"burst {name}: {b['trades']} trades, sustained {b['sustained_per_s']}/s, "
              f"{b['fraction_of_bound']:.1%} of the gas-target bound {b['bound_per_s']}/s, "
              f"{b['gas_per_trade']} gas/trade, base fee {b['base_fee_gwei_first']:.3g} -> "
              f"{b['base_fee_gwei_last']:.3g} gwei")
    print(f"saturation new/old: {summary['saturation_new_over_old']}")
    for load, row in summary["loads"].items():
        print(f"  {'ok  ' if row['p95_target_met'] else 'MISS'} p95 at {load}/s: "
              f"{row['new_p95_s']} s (old {row['old_p95_s']} s, new/old "
              f"{row['p95_new_over_old']}; target <= {P95_TARGET_S})")
    print(f"  {'ok  ' if summary['bound_target_met'] else 'MISS'} saturation "
          f"{summary['saturation_new_per_s']}/s = {summary['fraction_of_bound']:.1%} of the "
          f"bound (target >= {BOUND_TARGET:.0%})")
    print(f"load average before/after: {result['load_average_before']} / "
          f"{result['load_average_after']}")


def plot(result: dict[str, Any], loads: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    labels = [f"{result['new']['loads'][load]['offered_rate']:.0f}" +
              (" (max)" if load == "max" else "") for load in loads]
    for name, style in (("old", "--"), ("new", "-")):
        for key, marker in (("latency_p50_s", "o"), ("latency_p95_s", "s"),
                            ("latency_p99_s", "^")):
            left.plot(labels, [result[name]["loads"][load][key] for load in loads],
                      linestyle=style, marker=marker,
                      label=f"{name} {key.split('_')[1]}")
    left.axhline(P95_TARGET_S, color="red", linestyle=":", label="p95 target")
    left.set(xlabel="trades/s offered", ylabel="stream entry -> receipt (s)",
             title="Latency percentiles by load")
    left.legend(fontsize=8)
    for load in loads:
        latencies = result["new"]["loads"][load]["latencies"]
        right.plot(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))],
                   label=f"new, {load}/s")
    right.axvline(P95_TARGET_S, color="red", linestyle=":")
    right.set(xlabel="stream entry -> receipt (s)", ylabel="fraction of trades",
              title="Latency distribution (new)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=parse_loads, default=parse_loads("10,100,500,max"))
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per load")
    parser.add_argument("--burst", type=int, default=15_000, help="trades in the burst")
    parser.add_argument("--gas-limit", type=int, default=ChainSettings().gas_limit)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"period_s": PERIOD, "gas_limit": args.gas_limit,
                              "seconds_per_load": args.seconds, "cores": os.cpu_count(),
                              "load_average_before": os.getloadavg()}
    began = time.monotonic()
    for name, overrides in (("old", OLD), ("new", {})):
        result[name] = measure(name, overrides, args, random.Random(SEED))
    result["wall_s"] = round(time.monotonic() - began, 1)
    result["load_average_after"] = os.getloadavg()
    result["summary"] = compare(result, args.loads)
    (args.out / "bridge_latency.json").write_text(json.dumps(result, indent=1))
    plot(result, args.loads, args.out / "bridge_latency.png")
    print_report(result, args.loads)
    print(f"\nwrote {args.out / 'bridge_latency.json'} and {args.out / 'bridge_latency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
