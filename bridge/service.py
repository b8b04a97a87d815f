"""The bridge as a background process of the native stack (``./scripts/up``/``down``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from bridge.config import BridgeSettings
from bridge.errors import BridgeError
from pilotchain.config import PROJECT_ROOT
from pilotchain.processes import ManagedProcess


class BridgeService:
    """Runs ``python -m bridge`` (the ``pilotchain-bridge`` command) in the background and
    waits until its health endpoint answers; implements ``pilotchain.stack.Service``."""

    name = "bridge"

    def __init__(self, settings: BridgeSettings, env: Mapping[str, str], state_dir: Path,
                 log_file: Path, *, start_timeout: float = 90.0) -> None:
        self.settings = settings
        self.env = dict(env)
        self.log_file = log_file
        self.start_timeout = start_timeout
        self.process = ManagedProcess("bridge", state_dir)
        self.marker = str(state_dir / "bridge")

    def start(self, net: Any = None) -> bool:
        """Start unless running; return once /health says ok (True if it was started)."""
        if self.process.is_running():
            return False
        env = dict(self.env)
        if net is not None:
            env["RPC_URL"] = net.rpc_url
        self.process.start([sys.executable, "-m", "bridge"], marker=self.marker,
                           log_file=self.log_file, env=env, cwd=PROJECT_ROOT)
        self._wait_healthy()
        return True

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        problem = "no answer yet"
        while time.monotonic() < deadline:
            if not self.process.is_running():
                raise BridgeError(f"The bridge exited while starting. End of {self.log_file}:"
                                  f"\n{self._log_tail()}")
            try:
                reply = requests.get(f"{self.settings.metrics_url}/health", timeout=2)
                if reply.status_code == 200:
                    return
                problem = reply.json().get("problem") or reply.json().get("status", problem)
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        raise BridgeError(
            f"The bridge did not become healthy within {self.start_timeout:.0f} s ({problem}); "
            f"see {self.log_file}."
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> bool:
        """SIGTERM and wait (the bridge acknowledges what it can, then exits)."""
        return self.process.stop(timeout=30)

    def status(self) -> dict[str, Any]:
        return {"bridge_metrics_url": f"{self.settings.metrics_url}/metrics"}
