"""The faucet in the native stack: gunicorn serving ``faucet.app:create_app()``, in the
background."""

from __future__ import annotations

from faucet.config import FaucetSettings
from runner.services import ScrapedGunicornService, gthread


class FaucetService(ScrapedGunicornService[FaucetSettings]):
    """gunicorn with FAUCET_WORKERS gthread workers of FAUCET_THREADS threads each, and its
    metrics port; ready once ``/api/info`` answers 200."""

    name = "faucet"
    app = "faucet.app:create_app()"
    config = "faucet.gunicorn_conf"
    port_setting = "FAUCET_PORT"
    metrics_setting = "FAUCET_METRICS_PORT"
    health_path = "/api/info"
    status_key = "faucet_url"

    def worker_args(self) -> tuple[str, ...]:
        return gthread(self.settings.threads)
