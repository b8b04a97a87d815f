"""The participant portal in the native stack: its indexer (``python -m portal``) and its
web app (gunicorn serving ``portal.web.app:create_app()``), both in the background."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.config import BridgeSettings
from closer.config import CloserSettings
from ingest.config import IngestSettings, MqttSettings
from portal.config import PortalSettings
from portal.db import started_cursor
from portal.errors import PortalError
from portal.web.config import WebSettings
from runner.services import BackgroundService, ScrapedGunicornService, gthread


class PortalIndexerService(BackgroundService):
    """``pilotchain-portal-indexer``; ready once it has recorded its cursor in the index."""

    name = "portal-indexer"
    start_timeout = 90.0
    others_need_it = True

    def __init__(self, settings: PortalSettings, state_dir: Path,
                 env: Mapping[str, str]) -> None:
        super().__init__(state_dir, env)
        self.settings = settings

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "portal"]

    def probe(self) -> bool:
        try:
            return started_cursor(self.settings.database_url) is not None
        except PortalError as error:
            self.last_answer = str(error)
            return False

    def status(self) -> dict[str, Any]:
        return {}


class PortalWebService(ScrapedGunicornService[WebSettings]):
    """gunicorn with PORTAL_WORKERS gthread workers of PORTAL_THREADS threads each, and its
    metrics port."""

    name = "portal"
    app = "portal.web.app:create_app()"
    config = "portal.web.gunicorn_conf"
    port_setting = "PORTAL_PORT"
    metrics_setting = "PORTAL_METRICS_PORT"
    status_key = "portal_url"

    def worker_args(self) -> tuple[str, ...]:
        return gthread(self.settings.threads)


def with_health_urls(env: Mapping[str, str], bridge: BridgeSettings, ingest: IngestSettings,
                     closer: CloserSettings, subscriber: MqttSettings | None = None
                     ) -> dict[str, str]:
    """``env`` for the portal, naming the ``/health`` of the bridge, the ingest (and its MQTT
    subscriber) and the slot closer where this stack runs them (their configured metrics
    ports), unless ``env`` names them itself."""
    urls = {"PORTAL_BRIDGE_HEALTH_URL": f"{bridge.metrics_url}/health",
            "PORTAL_INGEST_HEALTH_URL": f"{ingest.metrics_url}/health",
            "PORTAL_CLOSER_HEALTH_URL": f"{closer.metrics_url}/health"}
    if subscriber is not None:
        urls["PORTAL_INGEST_MQTT_HEALTH_URL"] = f"{subscriber.metrics_url}/health"
    return {**urls, **env}
