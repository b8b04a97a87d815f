"""gunicorn's side of a web app's metrics (the faucet, the portal): prometheus_client's
multiprocess mode, set up by the master before any worker starts.

A service's gunicorn configuration module (``faucet.gunicorn_conf``,
``portal.web.gunicorn_conf``) calls :func:`configure` with its settings: the public and the
metrics address to bind, ``PROMETHEUS_MULTIPROC_DIR`` pointed at the service's own directory
(in the master's environment, which every worker inherits; prometheus_client reads it when
it is first imported, which the service's package may already have done, so the choice is
made again here),
the directory emptied when gunicorn starts (counts begin at zero with the service, and files
of an earlier run's workers never add in), and each exited worker's live gauges dropped
(``child_exit`` -> ``multiprocess.mark_process_dead``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def configure(host: str, port: int, metrics_host: str, metrics_port: int,
              directory: Path) -> dict[str, Any]:
    """gunicorn settings (as a configuration module's globals): ``bind`` and the hooks."""
    if not metrics_port:
        return {"bind": [address(host, port)]}
    os.environ[MULTIPROCESS_VARIABLE] = str(directory)
    # Metrics look their value class up in prometheus_client.values when they are created
    # (in the workers, by the app factory); chosen at import, it must see the variable.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return {"bind": [address(host, port), address(metrics_host, metrics_port)],
            "on_starting": empty_directory(directory), "child_exit": worker_gone(directory)}


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def empty_directory(directory: Path) -> Callable[[Any], None]:
    """The ``on_starting`` hook: the directory exists and holds no earlier samples."""

    def on_starting(server: Any) -> None:
        del server
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()

    return on_starting


def worker_gone(directory: Path) -> Callable[[Any, Any], None]:
    """The ``child_exit`` hook: an exited worker's live gauges leave the sums (its counters
    stay: a total does not fall because a worker restarted)."""

    def child_exit(server: Any, worker: Any) -> None:
        del server
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, str(directory))  # type: ignore[no-untyped-call]

    return child_exit
