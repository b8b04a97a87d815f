"""A service's Metrics in Prometheus's text exposition format (``GET /metrics``).

The names follow Prometheus's conventions: the ``pilotchain_`` prefix, base units in the
name (``_seconds``, ``_bytes``), ``_total`` on counters. They are service-neutral (an entry is
a trade for the bridge, a reading for the ingest): Prometheus's ``job`` label says which
service a sample came from. The JSON snapshot the tests and the portal read moved to
``/status``; ``/health`` stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from bridge.health import health_answer
from bridge.metrics import LATENCY_BUCKETS, Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Each counter of a Metrics object: its Prometheus name (without _total) and help.
COUNTERS = {
    "received": ("pilotchain_entries_received", "Stream entries read (trades, readings)."),
    "settled": ("pilotchain_entries_settled",
                "Entries settled: on chain, or found there already, and acknowledged."),
    "recorded": ("pilotchain_entries_recorded", "Entries this service wrote on chain."),
    "already_recorded": ("pilotchain_entries_already_recorded",
                         "Entries the contract already held (a retry, a replay)."),
    "duplicates": ("pilotchain_entries_duplicate", "Entries that repeated another."),
    "dead_lettered": ("pilotchain_entries_dead_lettered",
                      "Entries refused and moved to the dead-letter stream, with a reason."),
    "batches": ("pilotchain_batches_sent", "Transactions sent, each carrying a batch."),
    "replacements": ("pilotchain_transactions_replaced",
                     "Transactions re-sent with a higher fee at the same nonce."),
    "reverted_batches": ("pilotchain_batches_reverted", "Batches whose transaction reverted."),
    "minute_readings": ("pilotchain_minute_readings",
                        "Minute readings kept off chain (their anchor goes on chain)."),
    "passes": ("pilotchain_closer_passes", "Passes of the slot closer over the due slots."),
    "balanced": ("pilotchain_slots_balanced", "Metered slots closed and balanced."),
    "unmetered": ("pilotchain_slots_unmetered", "Slots closed without a meter's readings."),
}

# Each numeric gauge: its Prometheus name and help.
GAUGES = {
    "pending": ("pilotchain_entries_pending",
                "Entries read and not yet settled (held by this process)."),
    "queued": ("pilotchain_entries_queued", "Entries waiting for a batch."),
    "in_flight_trades": ("pilotchain_entries_in_flight",
                         "Entries in transactions sent and not yet mined."),
    "in_flight_transactions": ("pilotchain_transactions_in_flight",
                               "Transactions sent and not yet mined."),
    "last_block": ("pilotchain_chain_head_block", "The newest block this service has seen."),
    "base_fee_gwei": ("pilotchain_chain_base_fee_gwei", "The chain's base fee per gas."),
    "gas_per_trade": ("pilotchain_gas_per_entry", "Measured gas one entry costs on chain."),
    "nonce": ("pilotchain_sender_next_nonce", "The next nonce of the service's key."),
    "backlog": ("pilotchain_stream_backlog_entries",
                "Entries in the stream not yet settled (whoever holds them)."),
    "oldest_unsettled_s": ("pilotchain_stream_oldest_unsettled_seconds",
                           "How long the oldest unsettled entry has waited."),
    "open_due_slots": ("pilotchain_slots_due_open",
                       "Slots past their deadline the closer has not closed yet."),
    "last_pass": ("pilotchain_closer_last_pass_timestamp_seconds",
                  "When the slot closer last finished a pass (Unix time)."),
}

# What a connection gauge may say; one sample per state, 1 for the current one.
CONNECTIONS = {"redis": ("connecting", "ok", "unreachable"),
               "chain": ("connecting", "ok", "unreachable")}
STATES = ("starting", "running", "degraded", "waiting", "retrying", "stopped")
HEALTH = ("ok", "degraded")


class MetricsCollector:
    """Reads one Metrics snapshot per scrape (so every family is of the same moment)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snapshot = self.metrics.snapshot()
        for name, count in self.metrics.counters().items():
            metric, text = COUNTERS.get(name, (f"pilotchain_{name}", f"Count of {name}."))
            counter = CounterMetricFamily(metric, text)
            counter.add_metric([], count)
            yield counter
        for name, (metric, text) in GAUGES.items():
            value = snapshot.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield GaugeMetricFamily(metric, text, value=value)
        yield from _states(snapshot)
        yield _latency(self.metrics)


def _states(snapshot: dict[str, Any]) -> Iterator[Metric]:
    state = GaugeMetricFamily("pilotchain_service_state",
                              "1 for the service's current state, 0 for the others.",
                              labels=["state"])
    for name in dict.fromkeys((*STATES, str(snapshot["state"]))):
        state.add_metric([name], 1.0 if snapshot["state"] == name else 0.0)
    yield state
    code, body = health_answer(snapshot)
    healthy = GaugeMetricFamily("pilotchain_service_healthy",
                                "1 while /health says ok, 0 while it says degraded or the "
                                "service cannot work.")
    healthy.add_metric([], 1.0 if code == 200 and body["status"] == "ok" else 0.0)
    yield healthy
    for link, states in CONNECTIONS.items():
        value = snapshot.get(link)
        if value not in states:
            continue  # "n/a": this service has no such connection
        family = GaugeMetricFamily(f"pilotchain_{link}_connected",
                                   f"1 while the service reaches {link.capitalize()}.")
        family.add_metric([], 1.0 if value == "ok" else 0.0)
        yield family


def _latency(metrics: Metrics) -> Metric:
    counts, total, count = metrics.latency_histogram()
    cumulative, buckets = 0, []
    for bound, number in zip(LATENCY_BUCKETS, counts, strict=True):
        cumulative += number
        buckets.append((_bound(bound), cumulative))
    buckets.append(("+Inf", count))
    return HistogramMetricFamily(
        "pilotchain_entry_latency_seconds",
        "Time from an entry's arrival in the stream to its transaction's receipt.",
        buckets=buckets, sum_value=total)


def _bound(bound: float) -> str:
    return f"{bound:g}" if bound != int(bound) else f"{int(bound)}.0"


def registry_for(metrics: Metrics) -> CollectorRegistry:
    """A registry of the service's metrics and its process's (CPU, memory, file
    descriptors, as ``process_*``), not the library's global one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(metrics))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
