"""What one ``track_trade_event`` of gsy-e's plug-in costs gsy-e's thread, against a baseline
measured in the same run, with Redis up and with Redis down.

    .venv/bin/python benchmarks/plugin_overhead.py [--trades 3000] [--rate 1000]

Starts its own Redis (RedisService, a free port, a temporary directory). A stand-in for
gsy-e's market calls ``track_trade_event`` at ``--rate`` calls per second (spinning between
calls, as a busy market would: a sleep's wake-up jitter blurs 1 kHz pacing) with the
recordings of ``tests/data`` under fresh trade ids, in three phases of ``--trades`` calls:

1. **baseline**: a plain function that builds the same event and appends it to a
   ``collections.deque``: the least any interface must do per trade;
2. **Redis up**: the plug-in (``pilotchain_gsy_plugin``), its publisher thread delivering;
3. **Redis down**: the plug-in after redis-server was stopped (the events wait in memory).

Then what the hook on gsy-e's chain legs adds to ``TwoSidedMarket.accept_bid``, on a stand-in
market with gsy-e's shape (its ``accept_bid`` behind a lock decorator, making a trade): the
method alone (**accept_bid**), wrapped by the plug-in (``report_chain_legs``) for a bid trade
of a match, which is not reported (**+hook, paired**), and for a chain leg, which is
(**+hook, leg**, Redis up); their extra microseconds per call over the method alone.

Prints each phase's wall time per call (mean, median, p99, max) and the calling thread's CPU
time, the ratio of the plug-in's means to the baseline's (machines here are noisy, so the
ratio is the number to compare between runs), and the earlier target (mean under 1 ms per call
at 1,000 trades/s), reported, not judged. Then restarts Redis and checks the outcome: every
trade of both plug-in phases in the stream, once, in order. Writes ``plugin_overhead.json``
under ``--out`` (default ``benchmarks/results/``); the run is bounded by ``--deadline``
seconds and stops the Redis it started, also on failure.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from pilotchain.errors import PilotChainError
from pilotchain.settings import PROJECT_ROOT
from runner.redis import RedisService, private_connection

# The plug-in is a distribution of its own, installed into gsy-e's environment, not this one.
sys.path.insert(0, str(PROJECT_ROOT / "plugin"))
from pilotchain_gsy_plugin import (
    EVENT_FIELD,
    PluginSettings,
    SubstrateBlockchainInterface,
    TradePublisher,
    report_chain_legs,
)

DATA = PROJECT_ROOT / "tests" / "data"
STREAM = "bench:plugin"
MARKET = "6b3c420b-e4f2-49eb-a762-4db010a3e4ec"
TARGET_SECONDS = 0.001
MAX_TRADES = 100_000

Track = Callable[[Any, Any], None]


class FakeTrade:
    """Stands in for gsy_framework's Trade: only ``serializable_dict`` is used."""

    def __init__(self, trade: dict[str, Any]) -> None:
        self.id = trade["id"]
        self._trade = trade

    def serializable_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._trade))


def make_events(count: int) -> list[dict[str, Any]]:
    """``count`` recorded events with fresh trade ids."""
    pool = [json.loads(line) for path in sorted(DATA.glob("*.jsonl"))
            for line in path.read_text().splitlines() if line]
    events = []
    for index in range(count):
        event = json.loads(json.dumps(pool[index % len(pool)]))
        event["trade"]["id"] = str(uuid.uuid4())
        events.append(event)
    return events


def baseline_interface(sink: deque[dict[str, Any]]) -> Track:
    """The same event the plug-in builds, appended to a deque: the least work per trade."""
    def track_trade_event(time_slot: Any, trade: Any) -> None:
        sink.append({"market_id": MARKET, "simulation_id": None,
                     "time_slot": None if time_slot is None else str(time_slot),
                     "trade": trade.serializable_dict()})
    return track_trade_event


def paced_calls(track: Track, events: list[dict[str, Any]], rate: float,
                deadline: float) -> dict[str, float]:
    """Call ``track`` at ``rate`` per second; per-call wall and thread CPU time, in us."""
    wall, cpu = [], []
    started = time.perf_counter()
    for index, event in enumerate(events):
        while time.perf_counter() < started + index / rate:
            pass
        if time.monotonic() > deadline:
            raise PilotChainError("the run passed its --deadline; use fewer --trades")
        trade = FakeTrade(event["trade"])
        before, before_cpu = time.perf_counter(), time.thread_time()
        track(event["time_slot"], trade)
        wall.append(time.perf_counter() - before)
        cpu.append(time.thread_time() - before_cpu)
    ordered = sorted(wall)
    return {"calls": len(wall),
            "wall_mean_us": statistics.mean(wall) * 1e6,
            "wall_median_us": statistics.median(wall) * 1e6,
            "wall_p99_us": ordered[int(0.99 * len(ordered))] * 1e6,
            "wall_max_us": ordered[-1] * 1e6,
            "cpu_mean_us": statistics.mean(cpu) * 1e6}


class StandInMarket:
    """gsy-e's TwoSidedMarket as far as the hook sees it (models/market/two_sided.py)."""

    def __init__(self, bc: Any) -> None:
        self.bc_interface = bc
        self.time_slot = None
        self.trades: list[Any] = []
        self._lock = threading.RLock()
        self.pending: list[dict[str, Any]] = []

    def accept_bid(self, bid: Any, energy: Any = None, seller: Any = None, buyer: Any = None,
                   trade_offer_info: Any = None, offer: Any = None) -> Any:
        with self._lock:  # gsy-e's lock_market_action
            trade = FakeTrade(self.pending.pop()["trade"])
            self.trades.append(trade)
            return trade


def leg_calls(accept_bid: Callable[..., Any], market: StandInMarket,
              events: list[dict[str, Any]], offer: Any, rate: float,
              deadline: float) -> dict[str, float]:
    """``accept_bid`` of ``market`` once per event, paced like paced_calls."""
    market.pending = list(reversed(events))
    return paced_calls(lambda _slot, _trade: accept_bid(market, "bid", 1.0, offer=offer),
                       events, rate, deadline)


def delivered_ids(url: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(fields[EVENT_FIELD.encode()])["trade"]["id"]
                for _, fields in client.xrange(STREAM)]
    finally:
        client.close()


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    deadline = time.monotonic() + args.deadline
    store = RedisService(private_connection(), home / "redis", home / "pids")
    store.start()
    publisher = TradePublisher(PluginSettings(redis_url=store.url, stream=STREAM,
                                              overflow_file=home / "overflow.jsonl"))
    try:
        plugin = SubstrateBlockchainInterface(MARKET, None)
        plugin._publisher = publisher  # a publisher on this run's Redis and stream
        events = make_events(3 * args.trades)
        sink: deque[dict[str, Any]] = deque()
        # The run's own events would make every full collection (triggered by any
        # allocation, the plug-in's included) walk them: keep them out of its way.
        gc.freeze()
        try:
            result = {"baseline": paced_calls(baseline_interface(sink),
                                              events[:args.trades], args.rate, deadline)}
            result["redis_up"] = paced_calls(plugin.track_trade_event,
                                             events[args.trades:2 * args.trades], args.rate,
                                             deadline)
            if not publisher.flush(timeout=max(1.0, deadline - time.monotonic())):
                raise PilotChainError("Redis did not take the first phase's trades in time")
            market = StandInMarket(plugin)
            plain = StandInMarket.accept_bid
            hooked = type("TwoSidedMarket", (StandInMarket,), {"accept_bid": plain})
            report_chain_legs(hooked)
            legs = make_events(args.trades)
            result["accept_bid"] = leg_calls(plain, market, legs, None, args.rate, deadline)
            result["hook_paired"] = leg_calls(hooked.accept_bid, market,  # type: ignore[attr-defined]
                                              legs, "offer", args.rate, deadline)
            result["hook_leg"] = leg_calls(hooked.accept_bid, market,  # type: ignore[attr-defined]
                                           legs, None, args.rate, deadline)
            if not publisher.flush(timeout=max(1.0, deadline - time.monotonic())):
                raise PilotChainError("Redis did not take the chain legs in time")
            store.stop()
            result["redis_down"] = paced_calls(plugin.track_trade_event,
                                               events[2 * args.trades:], args.rate, deadline)
            waiting = publisher.pending()
        finally:
            gc.unfreeze()
        store.start()
        flushed = publisher.flush(timeout=max(1.0, deadline - time.monotonic()))
        # The plug-in's trades in order: Redis up, the chain legs (reported once; the paired
        # bid trades not at all), Redis down.
        expected = [event["trade"]["id"] for event in
                    [*events[args.trades:2 * args.trades], *legs, *events[2 * args.trades:]]]
        result["outcome"] = {
            "waiting_while_down": waiting,
            "all_delivered_once_in_order": flushed and delivered_ids(store.url)
            == expected,
        }
        return result
    finally:
        publisher.close(timeout=1.0)
        store.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 if every trade arrived (the cost is reported, not judged)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=3000,
                        help=f"calls per phase (3000, at most {MAX_TRADES})")
    parser.add_argument("--rate", type=float, default=1000, help="calls per second (1000)")
    parser.add_argument("--deadline", type=float, default=120, help="give up after (s)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 1 <= args.trades <= MAX_TRADES or args.rate <= 0:
        parser.error(f"--trades must be 1 to {MAX_TRADES} and --rate positive")
    try:
        with tempfile.TemporaryDirectory(prefix="plugin-bench-") as tmp:
            result = run(args, Path(tmp))
    except PilotChainError as error:
        print(f"plugin_overhead: {error}")
        return 2
    base = result["baseline"]
    result["ratios"] = {phase: {"wall_mean": result[phase]["wall_mean_us"] / base["wall_mean_us"],
                                "cpu_mean": result[phase]["cpu_mean_us"] / base["cpu_mean_us"]}
                        for phase in ("redis_up", "redis_down")}
    result["setup"] = {"trades_per_phase": args.trades, "rate_per_s": args.rate,
                       "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    print(f"plug-in cost per track_trade_event: {args.trades} calls per phase at "
          f"{args.rate:.0f}/s, {os.cpu_count()} CPUs, load average "
          f"{result['setup']['load_average']:.1f}")
    print(f"{'phase':<11} {'mean us':>8} {'median':>8} {'p99':>8} {'max':>8} {'CPU us':>8} "
          f"{'x baseline':>11}")
    for phase in ("baseline", "redis_up", "redis_down"):
        row = result[phase]
        ratio = result["ratios"].get(phase, {"wall_mean": 1.0})["wall_mean"]
        print(f"{phase:<11} {row['wall_mean_us']:>8.1f} {row['wall_median_us']:>8.1f} "
              f"{row['wall_p99_us']:>8.0f} {row['wall_max_us']:>8.0f} "
              f"{row['cpu_mean_us']:>8.1f} {ratio:>10.1f}x")
    plain = result["accept_bid"]
    print(f"{'accept_bid':<17} {'mean us':>8} {'median':>8} {'p99':>8} {'CPU us':>8} "
          f"{'extra us':>9}")
    for phase, label in (("accept_bid", "alone"), ("hook_paired", "+hook, paired"),
                         ("hook_leg", "+hook, leg")):
        row = result[phase]
        print(f"{label:<17} {row['wall_mean_us']:>8.1f} {row['wall_median_us']:>8.1f} "
              f"{row['wall_p99_us']:>8.0f} {row['cpu_mean_us']:>8.1f} "
              f"{row['wall_mean_us'] - plain['wall_mean_us']:>9.1f}")
    worst = max(result[p]["wall_mean_us"] for p in ("redis_up", "redis_down")) / 1e6
    print(f"target: mean under {TARGET_SECONDS * 1e3:.0f} ms per call: "
          f"{'met' if worst < TARGET_SECONDS else 'MISSED'}")
    outcome = result["outcome"]
    ok = bool(outcome["all_delivered_once_in_order"])
    print(f"outcome: {outcome['waiting_while_down']} trades waited while Redis was down; "
          + ("every trade delivered once, in order" if ok else "FAILED: trades missing or "
             "out of order"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plugin_overhead.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'plugin_overhead.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
