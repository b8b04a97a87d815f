"""The meter ingest in the native stack: the writer (``python -m ingest``) and the HTTP
endpoint (gunicorn serving ``ingest.http:create_app()``), each in the background."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ingest.config import HttpSettings
from runner.services import BackgroundService, MetricsService, answers_ok, gunicorn_argv


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
        return gunicorn_argv("ingest.http:create_app()", s.host, s.port, s.workers)

    def probe(self) -> bool:
        return answers_ok(self, f"{self.url}/health")

    def status(self) -> dict[str, Any]:
        return {"ingest_url": f"{self.url}/api/readings"}
