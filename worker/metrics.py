"""Progress counters of one service process, shared by its loop, its log and its HTTP endpoint.

A service declares what it measures (:class:`Counter`, :class:`Gauge`, :class:`Link`,
:data:`LATENCY`), each with its Prometheus name and help, and only that is reported: the slot
closer has no Redis link to report, the MQTT subscriber no chain. :data:`STREAM_WORKER` is
what every stream-to-chain worker measures; a service adds its own families.

Memory stays flat however many items pass: counters, gauges and a fixed-size window of the
latest latencies, never per-item history.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LATENCY_WINDOW = 4096
# Upper bounds (seconds) of the latency histogram's buckets: a batch in the next block is
# about one block period; minutes mean a backlog or an outage.
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# What a link may say; "connecting" until the service first reaches it.
LINK_STATES = ("connecting", "ok", "unreachable")


@dataclass(frozen=True)
class Counter:
    """A count that only grows: its key in ``/status`` and its Prometheus name (no _total)."""

    key: str
    name: str
    help: str


@dataclass(frozen=True)
class Gauge:
    """A number that goes up and down (None until first set: then it is not exposed)."""

    key: str
    name: str
    help: str
    initial: float | None = None


@dataclass(frozen=True)
class Link:
    """A connection the service holds (``redis``, ``chain``): one of LINK_STATES."""

    key: str


@dataclass(frozen=True)
class Latency:
    """Each item's time from its stream entry to its receipt (percentiles and a histogram)."""

    name: str
    help: str


Family = Counter | Gauge | Link | Latency

RECEIVED = Counter("received", "pilotchain_entries_received",
                   "Stream entries read (trades, readings).")
SETTLED = Counter("settled", "pilotchain_entries_settled",
                  "Entries settled: on chain, or found there already, and acknowledged.")
RECORDED = Counter("recorded", "pilotchain_entries_recorded",
                   "Entries this service wrote on chain.")
ALREADY_RECORDED = Counter("already_recorded", "pilotchain_entries_already_recorded",
                           "Entries the contract already held (a retry, a replay).")
DUPLICATES = Counter("duplicates", "pilotchain_entries_duplicate",
                     "Entries that repeated another.")
DEAD_LETTERED = Counter("dead_lettered", "pilotchain_entries_dead_lettered",
                        "Entries refused and moved to the dead-letter stream, with a reason.")
BATCHES = Counter("batches", "pilotchain_batches_sent",
                  "Transactions sent, each carrying a batch.")
REPLACEMENTS = Counter("replacements", "pilotchain_transactions_replaced",
                       "Transactions re-sent with a higher fee at the same nonce.")
REVERTED_BATCHES = Counter("reverted_batches", "pilotchain_batches_reverted",
                           "Batches whose transaction reverted.")
PENDING = Gauge("pending", "pilotchain_entries_pending",
                "Entries read and not yet settled (held by this process).", 0)
QUEUED = Gauge("queued", "pilotchain_entries_queued", "Entries waiting for a batch.", 0)
IN_FLIGHT_ITEMS = Gauge("in_flight_items", "pilotchain_entries_in_flight",
                        "Entries in transactions sent and not yet mined.", 0)
IN_FLIGHT_TRANSACTIONS = Gauge("in_flight_transactions", "pilotchain_transactions_in_flight",
                               "Transactions sent and not yet mined.", 0)
LAST_BLOCK = Gauge("last_block", "pilotchain_chain_head_block",
                   "The newest block this service has seen.")
BASE_FEE = Gauge("base_fee_gwei", "pilotchain_chain_base_fee_gwei",
                 "The chain's base fee per gas.")
GAS_PER_ITEM = Gauge("gas_per_item", "pilotchain_gas_per_entry",
                     "Measured gas one entry costs on chain.")
NONCE = Gauge("nonce", "pilotchain_sender_next_nonce", "The next nonce of the service's key.")
BACKLOG = Gauge("backlog", "pilotchain_stream_backlog_entries",
                "Entries in the stream not yet settled (whoever holds them).")
OLDEST_UNSETTLED = Gauge("oldest_unsettled_s", "pilotchain_stream_oldest_unsettled_seconds",
                         "How long the oldest unsettled entry has waited.")
REDIS = Link("redis")
CHAIN = Link("chain")
LATENCY = Latency("pilotchain_entry_latency_seconds",
                  "Time from an entry's arrival in the stream to its transaction's receipt.")

# What every stream-to-chain worker (worker.loop.Worker) measures.
STREAM_WORKER: tuple[Family, ...] = (
    RECEIVED, SETTLED, RECORDED, ALREADY_RECORDED, DUPLICATES, DEAD_LETTERED, BATCHES,
    REPLACEMENTS, REVERTED_BATCHES, PENDING, QUEUED, IN_FLIGHT_ITEMS, IN_FLIGHT_TRANSACTIONS,
    LAST_BLOCK, BASE_FEE, GAS_PER_ITEM, NONCE, REDIS, CHAIN, BACKLOG, OLDEST_UNSETTLED, LATENCY,
)


class Metrics:
    """Thread-safe counters (the loop writes, the HTTP thread reads snapshots) of the families
    declared, at construction or by :meth:`declare`."""

    def __init__(self, *families: Family) -> None:
        self._lock = threading.Lock()
        self._started = time.time()
        self._families: dict[str, Family] = {}
        self._counters: dict[str, int] = {}
        self._gauges: dict[str, Any] = {
            "state": "starting", "problem": None,
            # Set while the service works but needs a look (a backlog, a lost session).
            "warning": None,
        }
        self._latency: Latency | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # Since the start, for Prometheus: counts per bucket (the last for anything longer).
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self.declare(*families)

    def declare(self, *families: Family) -> None:
        """Measure these too (declaring one again changes nothing)."""
        with self._lock:
            for family in families:
                if isinstance(family, Latency):
                    self._latency = family
                    continue
                if family.key in self._families:
                    continue
                self._families[family.key] = family
                if isinstance(family, Counter):
                    self._counters.setdefault(family.key, 0)
                elif isinstance(family, Gauge):
                    self._gauges.setdefault(family.key, family.initial)
                else:
                    self._gauges.setdefault(family.key, "connecting")

    def families(self) -> list[Family]:
        """What is declared, in the order declared (the latency last, if measured)."""
        with self._lock:
            declared: list[Family] = list(self._families.values())
            return declared + ([self._latency] if self._latency is not None else [])

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def set(self, **gauges: Any) -> None:
        with self._lock:
            self._gauges.update(gauges)

    def latency(self, seconds: float) -> None:
        """One item's time from stream entry to receipt."""
        with self._lock:
            self._latencies.append(seconds)
            self._bucket_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._latency_sum += seconds

    def latency_histogram(self) -> tuple[list[int], float, int]:
        """Per-bucket counts (not cumulative; the overflow bucket left out), sum and count
        of every latency since the start."""
        with self._lock:
            counts = list(self._bucket_counts)
            return counts[:-1], self._latency_sum, sum(counts)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def get(self, name: str) -> Any:
        with self._lock:
            return self._counters.get(name, self._gauges.get(name))

    def snapshot(self) -> dict[str, Any]:
        """Everything, JSON-ready: counters, gauges, latency percentiles, process memory."""
        with self._lock:
            report: dict[str, Any] = {**self._counters, **self._gauges}
            latencies = sorted(self._latencies) if self._latency is not None else None
        if latencies is not None:
            report["latency_p50_s"] = _percentile(latencies, 0.50)
            report["latency_p95_s"] = _percentile(latencies, 0.95)
            report["latency_samples"] = len(latencies)
        report["uptime_s"] = round(time.time() - self._started, 1)
        report["rss_bytes"] = resident_memory()
        return report

    def summary(self, keys: Iterable[str] = (
            "received", "settled", "pending", "dead_lettered", "duplicates", "last_block",
            "in_flight_transactions", "base_fee_gwei", "latency_p95_s", "redis",
            "chain")) -> str:
        """One log line of the essentials (those of ``keys`` this service measures)."""
        s = self.snapshot()
        shown = {"in_flight_transactions": "in_flight_tx", "latency_p95_s": "p95_s"}
        return " ".join(f"{shown.get(key, key)}={s[key]}" for key in keys if key in s)


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return round(ordered[index], 3)


def resident_memory() -> int | None:
    """This process's resident set size in bytes (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None
