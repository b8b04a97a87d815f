"""The faucet in the native stack: gunicorn serving ``faucet:create_app()`` in the background.

``./scripts/up`` starts it after the chain (and Redis), ``./scripts/down`` stops it and
``./scripts/status --json`` reports ``faucet_url``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from faucet.config import FaucetSettings
from faucet.errors import FaucetError
from pilotchain import processes
from pilotchain.chain import wait_for
from pilotchain.config import PROJECT_ROOT
from pilotchain.errors import ChainError
from pilotchain.localnet import LocalNetwork

START_TIMEOUT = 60.0


class FaucetService:
    """gunicorn with FAUCET_WORKERS gthread workers of FAUCET_THREADS threads each."""

    name = "faucet"

    def __init__(self, settings: FaucetSettings, state_dir: Path,
                 env: Mapping[str, str]) -> None:
        """``env`` is the environment the workers read their settings from (the same
        snapshot ``settings`` was built from, .env included)."""
        self.settings = settings
        self.env = dict(env)
        self.process = processes.ManagedProcess("faucet", state_dir)
        self.marker = str(state_dir.resolve() / "faucet")
        self.log_file = state_dir.parent / "logs" / "faucet.log"

    @property
    def url(self) -> str:
        """Where a browser on this machine reaches the faucet."""
        host = self.settings.host
        if host in {"0.0.0.0", "::", ""}:
            host = "127.0.0.1"
        return f"http://{host}:{self.settings.port}"

    def start(self, net: LocalNetwork | None = None) -> bool:
        """Start gunicorn unless it runs; wait until ``/api/info`` answers 200.

        ``net`` (the LocalNetwork) supplies the RPC URL unless RPC_URL is set explicitly.
        """
        if self.process.is_running():
            return False
        self._check_port_free()
        env = dict(self.env)
        if net is not None and not env.get("RPC_URL"):
            env["RPC_URL"] = net.rpc_url
        self.process.start(self.argv(), marker=self.marker, log_file=self.log_file, env=env,
                           cwd=PROJECT_ROOT)
        self.wait_ready()
        return True

    def argv(self) -> list[str]:
        """The gunicorn command line."""
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

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll ``/api/info`` until it answers 200; fail with the log's end if gunicorn exits."""
        last: list[str] = []
        try:
            wait_for(lambda: self._ready(last), timeout=timeout,
                     what=f"the faucet at {self.url} to answer")
        except ChainError:
            said = f" Its last answer: {last[-1]}" if last else ""
            raise FaucetError(
                f"The faucet at {self.url} did not become ready within {timeout:.0f} s.{said} "
                f"See {self.log_file}."
            ) from None

    def _ready(self, last: list[str]) -> bool:
        """True once ``/api/info`` answers 200; keeps other answers in ``last``."""
        if not self.process.is_running():
            raise FaucetError(f"The faucet exited while starting. End of its log:\n{self._tail()}")
        try:
            response = requests.get(f"{self.url}/api/info", timeout=5)
        except requests.RequestException:
            return False
        if response.status_code != 200:
            last.append(response.text.strip()[:300])
        return response.status_code == 200

    def stop(self) -> bool:
        """SIGTERM gunicorn (it finishes running requests) and wait; True if clean."""
        return self.process.stop(timeout=30)

    def status(self) -> dict[str, Any]:
        """What ``./scripts/status --json`` adds."""
        return {"faucet_url": self.url}

    def _check_port_free(self) -> None:
        """Fail early, naming the setting, if another program holds the port."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.settings.host, self.settings.port))
            except OSError:
                raise FaucetError(
                    f"Port {self.settings.port} on {self.settings.host} is already in use by "
                    "another program; stop it or choose another port with FAUCET_PORT in .env."
                ) from None

    def _tail(self, lines: int = 20) -> str:
        """The end of the faucet's log, for error messages."""
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
