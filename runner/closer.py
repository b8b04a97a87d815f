"""The slot closer in the native stack: ``python -m closer`` in the background."""

from __future__ import annotations

from runner.services import MetricsService


class CloserService(MetricsService):
    """The ``pilotchain-closer`` process; ready once its ``/health`` answers 200."""

    name = "closer"
    command = ("closer",)
    port_setting = "CLOSER_METRICS_PORT"
