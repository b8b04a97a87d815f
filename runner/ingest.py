"""The meter ingest in the native stack: the writer (``python -m ingest``) and the HTTP
endpoint (gunicorn serving ``ingest.http:create_app()``), each in the background."""

from __future__ import annotations

from typing import Any

from ingest.config import HttpSettings
from runner.services import GunicornService, MetricsService


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


class IngestHttpService(GunicornService[HttpSettings]):
    """gunicorn with INGEST_HTTP_WORKERS workers serving the bulk-upload endpoint."""

    name = "ingest-http"
    app = "ingest.http:create_app()"
    port_setting = "INGEST_HTTP_PORT"

    def status(self) -> dict[str, Any]:
        return {"ingest_url": f"{self.url}/api/readings"}
