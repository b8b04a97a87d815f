"""A service's Metrics in Prometheus's text exposition format (``GET /metrics``).

The names follow Prometheus's conventions: the ``pilotchain_`` prefix, base units in the
name (``_seconds``, ``_bytes``), ``_total`` on counters. Each family is named where it is
declared (worker.metrics for the worker's, each service for its own); the names are
service-neutral (an entry is a trade for the bridge, a reading for the ingest): Prometheus's
``job`` label says which service a sample came from. The JSON snapshot the tests and the
portal read is ``/status``; ``/health`` is JSON too.
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

from worker.health import health_answer
from worker.metrics import LATENCY_BUCKETS, Counter, Gauge, Latency, Link, Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("starting", "running", "degraded", "waiting", "retrying", "stopped")


class MetricsCollector:
    """Reads one Metrics snapshot per scrape (so every family is of the same moment)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snapshot = self.metrics.snapshot()
        counts = self.metrics.counters()
        for family in self.metrics.families():
            if isinstance(family, Counter):
                counter = CounterMetricFamily(family.name, family.help)
                counter.add_metric([], counts.get(family.key, 0))
                yield counter
            elif isinstance(family, Gauge):
                value = snapshot.get(family.key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    yield GaugeMetricFamily(family.name, family.help, value=value)
            elif isinstance(family, Link):
                yield _link(family.key, snapshot.get(family.key))
            elif isinstance(family, Latency):
                yield _latency(family, self.metrics)
        yield from _states(snapshot)


def _link(key: str, value: Any) -> Metric:
    link = GaugeMetricFamily(f"pilotchain_{key}_connected",
                             f"1 while the service reaches {key.capitalize()}.")
    link.add_metric([], 1.0 if value == "ok" else 0.0)
    return link


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


def _latency(family: Latency, metrics: Metrics) -> Metric:
    counts, total, count = metrics.latency_histogram()
    cumulative, buckets = 0, []
    for bound, number in zip(LATENCY_BUCKETS, counts, strict=True):
        cumulative += number
        buckets.append((_bound(bound), cumulative))
    buckets.append(("+Inf", count))
    return HistogramMetricFamily(family.name, family.help, buckets=buckets, sum_value=total)


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
