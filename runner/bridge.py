"""The bridge in the native stack: ``python -m bridge`` in the background."""

from __future__ import annotations

from runner.services import MetricsService


class BridgeService(MetricsService):
    """The ``pilotchain-bridge`` process; ready once its ``/health`` answers 200."""

    name = "bridge"
    command = ("bridge",)
    port_setting = "BRIDGE_METRICS_PORT"
