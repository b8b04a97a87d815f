"""The faucet in the native stack: gunicorn serving ``faucet:create_app()`` in the background."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faucet.config import FaucetSettings
from runner.services import BackgroundService, answers_ok, gunicorn_argv


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
        return gunicorn_argv("faucet:create_app()", s.host, s.port, s.workers,
                             "--worker-class", "gthread", "--threads", str(s.threads))

    def probe(self) -> bool:
        """Ready once ``/api/info`` answers 200."""
        return answers_ok(self, f"{self.url}/api/info")

    def status(self) -> dict[str, Any]:
        return {"faucet_url": self.url}
