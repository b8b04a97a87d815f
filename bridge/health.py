"""The bridge's HTTP endpoint: ``/metrics`` (JSON progress) and ``/health`` (up or not, and
degraded with a sentence while it works but lags).

stdlib ``http.server`` in a daemon thread: two read-only routes do not need a framework,
and the bridge's loop never waits for a client.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bridge.errors import BridgeConfigError
from bridge.metrics import Metrics


class HealthServer:
    """Serves one Metrics object; ``port`` 0 picks a free port (see ``.port``)."""

    def __init__(self, metrics: Metrics, host: str, port: int,
                 setting: str = "BRIDGE_METRICS_PORT") -> None:
        handler = _handler_for(metrics)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise BridgeConfigError(
                f"The metrics endpoint cannot listen on {host}:{port} ({error.strerror}); "
                f"choose another {setting}."
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="bridge-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def health_answer(snapshot: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``/health``: 503 while the service cannot work (Redis, the chain or its broker away,
    still starting), with its state and the problem; 200 while it works, its status ``ok``,
    or ``degraded`` with a sentence while it lags behind or recently lost its session: it
    needs a look, not a restart (Compose and ``./scripts/up`` judge liveness by the code)."""
    running = snapshot["state"] == "running"
    warning = snapshot.get("warning")
    if not running:
        status, problem = str(snapshot["state"]), snapshot["problem"]
    elif warning:
        status, problem = "degraded", warning
    else:
        status, problem = "ok", None
    body = {"status": status, "problem": problem, "redis": snapshot["redis"],
            "chain": snapshot["chain"], "last_block": snapshot["last_block"],
            "backlog": snapshot.get("backlog"),
            "oldest_unsettled_s": snapshot.get("oldest_unsettled_s")}
    return (200 if running else 503), body


def backlog_problem(length: int, age: float | None, max_backlog: int, max_age: float,
                    prefix: str) -> str | None:
    """The sentence for a stream's backlog past a health threshold, None within them."""
    if length > max_backlog:
        return (f"{length} entries wait to be settled, more than {max_backlog} "
                f"({prefix}_HEALTH_MAX_BACKLOG).")
    if age is not None and age > max_age:
        return (f"The oldest unsettled entry has waited {age:.0f} s, longer than {max_age:g} s "
                f"({prefix}_HEALTH_MAX_AGE).")
    return None


def _handler_for(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """GET /metrics and /health; anything else is 404."""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            snapshot = metrics.snapshot()
            if path in ("", "/metrics"):
                self._reply(200, snapshot)
            elif path == "/health":
                self._reply(*health_answer(snapshot))
            else:
                self._reply(404, {"error": f"No such endpoint {path}; try /metrics or /health."})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Polling clients would flood the bridge's log; stay quiet."""

    return Handler
