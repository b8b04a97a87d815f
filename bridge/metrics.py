"""Progress counters of one bridge process, shared by its loop, its log and its HTTP endpoint.

Memory stays flat however many trades pass: counters, gauges and a fixed-size window of the
latest latencies, never per-trade history.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections import deque
from typing import Any

LATENCY_WINDOW = 4096
# Upper bounds (seconds) of the latency histogram's buckets: a batch in the next block is
# about one block period; minutes mean a backlog or an outage.
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Metrics:
    """Thread-safe counters (the loop writes, the HTTP thread reads snapshots)."""

    COUNTERS = ("received", "settled", "recorded", "already_recorded", "duplicates",
                "dead_lettered", "batches", "replacements", "reverted_batches")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.time()
        self._counters = dict.fromkeys(self.COUNTERS, 0)
        self._gauges: dict[str, Any] = {
            "pending": 0, "queued": 0, "in_flight_trades": 0, "in_flight_transactions": 0,
            "last_block": None, "base_fee_gwei": None, "gas_per_trade": None, "nonce": None,
            "redis": "connecting", "chain": "connecting", "state": "starting", "problem": None,
            # Set while the service works but needs a look (a backlog, a lost session).
            "warning": None, "backlog": None, "oldest_unsettled_s": None,
        }
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # Since the start, for Prometheus: counts per bucket (the last for anything longer).
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def set(self, **gauges: Any) -> None:
        with self._lock:
            self._gauges.update(gauges)

    def latency(self, seconds: float) -> None:
        """One trade's time from stream entry to receipt."""
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
            latencies = sorted(self._latencies)
        report["latency_p50_s"] = _percentile(latencies, 0.50)
        report["latency_p95_s"] = _percentile(latencies, 0.95)
        report["latency_samples"] = len(latencies)
        report["uptime_s"] = round(time.time() - self._started, 1)
        report["rss_bytes"] = resident_memory()
        return report

    def summary(self) -> str:
        """One log line of the essentials."""
        s = self.snapshot()
        return (f"received={s['received']} settled={s['settled']} pending={s['pending']} "
                f"dead_lettered={s['dead_lettered']} duplicates={s['duplicates']} "
                f"last_block={s['last_block']} in_flight_tx={s['in_flight_transactions']} "
                f"base_fee_gwei={s['base_fee_gwei']} p95_s={s['latency_p95_s']} "
                f"redis={s['redis']} chain={s['chain']}")


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
