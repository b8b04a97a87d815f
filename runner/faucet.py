"""The faucet in the native stack: gunicorn serving ``faucet:create_app()`` in the background."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from faucet.config import FaucetSettings
from pilotchain.settings import PROJECT_ROOT
from runner.services import BackgroundService


class FaucetService(BackgroundService):
    """gunicorn with FAUCET_WORKERS gthread workers of FAUCET_THREADS threads each.

    ``env`` is the environment the workers read their settings from (the same snapshot
    ``settings`` was built from, .env included).
    """

    name = "faucet"

    def __init__(self, settings: FaucetSettings, state_dir: Path,
                 env: Mapping[str, str]) -> None:
        super().__init__(state_dir, env, port=(settings.host, settings.port, "FAUCET_PORT"))
        self.settings = settings

    @property
    def url(self) -> str:
        """Where a browser on this machine reaches the faucet."""
        host = self.settings.host
        if host in {"0.0.0.0", "::", ""}:
            host = "127.0.0.1"
        return f"http://{host}:{self.settings.port}"

    def argv(self) -> list[str]:
        s = self.settings
        return [
            sys.executable, "-m", "gunicorn",
            "--bind", f"{s.host}:{s.port}",
            "--workers", str(s.workers),
            "--worker-class", "gthread", "--threads", str(s.threads),
            "--chdir", str(PROJECT_ROOT),
            "--access-logfile", "-", "--error-logfile", "-",
            "--graceful-timeout", "10", "--timeout", "60",
            "faucet:create_app()",
        ]

    def probe(self) -> bool:
        """Ready once ``/api/info`` answers 200."""
        try:
            response = requests.get(f"{self.url}/api/info", timeout=5)
        except requests.RequestException:
            return False
        if response.status_code != 200:
            self.last_answer = response.text.strip()[:300]
        return response.status_code == 200

    def status(self) -> dict[str, Any]:
        return {"faucet_url": self.url}
