"""The bridge in the native stack: ``python -m bridge`` in the background."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from bridge.config import BridgeSettings
from runner.services import BackgroundService


class BridgeService(BackgroundService):
    """The ``pilotchain-bridge`` process; ready once its ``/health`` answers 200."""

    name = "bridge"
    start_timeout = 90.0

    def __init__(self, settings: BridgeSettings, env: Mapping[str, str],
                 state_dir: Path) -> None:
        port = (settings.metrics_host, settings.metrics_port, "BRIDGE_METRICS_PORT")
        super().__init__(state_dir, env, port=port if settings.metrics_port else None)
        self.settings = settings

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bridge"]

    def probe(self) -> bool:
        try:
            reply = requests.get(f"{self.settings.metrics_url}/health", timeout=2)
            if reply.status_code == 200:
                return True
            body = reply.json()
            self.last_answer = str(body.get("problem") or body.get("status", ""))
        except (requests.RequestException, ValueError):
            pass
        return False

    def status(self) -> dict[str, Any]:
        return {"bridge_metrics_url": f"{self.settings.metrics_url}/metrics"}
