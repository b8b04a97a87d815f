"""A service's HTTP endpoint: ``/metrics`` (Prometheus's text format, see
worker/prometheus.py), ``/status`` (the same progress as one JSON object) and ``/health`` (see
worker/health.py).

stdlib ``http.server`` in a daemon thread: three read-only routes do not need a framework,
and the service's loop never waits for a client.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.errors import WorkerConfigError
from worker.health import health_answer
from worker.metrics import Metrics
from worker.prometheus import CONTENT_TYPE, exposition, registry_for


class HealthServer:
    """Serves one Metrics object; ``port`` 0 picks a free port (see ``.port``); ``setting``
    names the port in the sentence of a clash."""

    def __init__(self, metrics: Metrics, host: str, port: int,
                 setting: str = "metrics port") -> None:
        handler = _handler_for(metrics)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise WorkerConfigError(
                f"The metrics endpoint cannot listen on {host}:{port} ({error.strerror}); "
                f"choose another {setting}."
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="worker-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    registry = registry_for(metrics)

    class Handler(BaseHTTPRequestHandler):
        """GET /metrics, /status and /health; anything else is 404."""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/metrics":
                self._send(200, exposition(registry), CONTENT_TYPE)
            elif path in ("", "/status"):
                self._reply(200, metrics.snapshot())
            elif path == "/health":
                self._reply(*health_answer(metrics.snapshot()))
            else:
                self._reply(404, {"error": f"No such endpoint {path}; try /metrics, /status "
                                           "or /health."})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Polling clients would flood the service's log; stay quiet."""

    return Handler
