"""The meter ingest in the native stack: the writer (``python -m ingest``) and the HTTP
endpoint (gunicorn serving ``ingest.http:create_app()``), each in the background."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from ingest.config import HttpSettings
from pilotchain.settings import PROJECT_ROOT
from runner.services import BackgroundService, MetricsService


class IngestService(MetricsService):
    """The ``pilotchain-ingest`` writer; ready once its ``/health`` answers 200."""

    name = "ingest"
    command = ("ingest",)
    port_setting = "INGEST_METRICS_PORT"


class IngestMqttService(MetricsService):
    """``pilotchain-ingest --mqtt``: the broker's readings onto the stream."""

    name = "ingest-mqtt"
    start_timeout = 60.0
    command = ("ingest", "--mqtt")
    port_setting = "INGEST_MQTT_METRICS_PORT"


class IngestHttpService(BackgroundService):
    """gunicorn with INGEST_HTTP_WORKERS workers serving the bulk-upload endpoint."""

    name = "ingest-http"

    def __init__(self, settings: HttpSettings, env: Mapping[str, str],
                 state_dir: Path) -> None:
        super().__init__(state_dir, env, port=(settings.host, settings.port,
                                               "INGEST_HTTP_PORT"))
        self.settings = settings

    @property
    def url(self) -> str:
        return self.settings.url

    def argv(self) -> list[str]:
        s = self.settings
        return [
            sys.executable, "-m", "gunicorn",
            "--bind", f"{s.host}:{s.port}",
            "--workers", str(s.workers),
            "--chdir", str(PROJECT_ROOT),
            "--access-logfile", "-", "--error-logfile", "-",
            "--graceful-timeout", "10", "--timeout", "60",
            "ingest.http:create_app()",
        ]

    def probe(self) -> bool:
        try:
            response = requests.get(f"{self.url}/health", timeout=5)
        except requests.RequestException:
            return False
        if response.status_code != 200:
            self.last_answer = response.text.strip()[:300]
        return response.status_code == 200

    def status(self) -> dict[str, Any]:
        return {"ingest_url": f"{self.url}/api/readings"}
