"""A Redis server for the native stack and the tests: Debian's redis-server, durable.

The bridge acknowledges a trade only after it is on chain, so the stream must survive a
Redis restart: append-only file, fsync every second, in a data directory of its own.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from pilotchain import processes
from pilotchain.chain import wait_for
from pilotchain.errors import PilotChainError


class RedisError(PilotChainError):
    """Redis could not be started or reached."""


@dataclass(frozen=True)
class RedisSettings:
    host: str = "127.0.0.1"
    port: int = 6379
    data_dir: Path = Path("data/redis")
    url_override: str | None = None

    @property
    def url(self) -> str:
        return self.url_override or f"redis://{self.host}:{self.port}/0"


class RedisService:
    """redis-server as a background process, started only when no external URL is set."""

    name = "redis"

    def __init__(self, settings: RedisSettings, state_dir: Path) -> None:
        self.settings = settings
        self.process = processes.ManagedProcess("redis", state_dir)
        self.log_file = state_dir.parent / "logs" / "redis.log"

    @property
    def external(self) -> bool:
        return self.settings.url_override is not None

    def start(self, net: Any = None) -> bool:
        """Start redis-server unless it runs already (or Redis is external); wait for PING."""
        if self.external or self.process.is_running():
            return False
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisError(
                "redis-server is not installed; run ./scripts/up (it installs Debian's "
                "redis-server) or set REDIS_URL to a Redis you run yourself."
            )
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--bind", self.settings.host, "--port", str(self.settings.port),
                "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--protected-mode", "no"]
        self.process.start(argv, marker=str(data_dir), log_file=self.log_file,
                           env={"PATH": "/usr/bin:/bin"}, cwd=data_dir)
        self.wait_ready()
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        client = redis.Redis.from_url(self.settings.url, socket_timeout=2)
        try:
            wait_for(lambda: self._ping(client), timeout=timeout,
                     what=f"Redis to answer PING at {self.settings.url}")
        finally:
            client.close()

    def _ping(self, client: redis.Redis) -> bool:
        if not self.external and not self.process.is_running():
            tail = self.log_file.read_text()[-800:] if self.log_file.exists() else "(no log)"
            raise RedisError(f"redis-server exited. End of its log:\n{tail}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> bool:
        return True if self.external else self.process.stop(timeout=30)

    def status(self) -> dict[str, Any]:
        return {"redis_url": self.settings.url}
