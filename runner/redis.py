"""A Redis server for the native stack and the tests: Debian's redis-server, durable.

The bridge acknowledges a trade only after it is on chain, so the stream must survive a
Redis restart: append-only file, fsync every second, in a data directory of its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from pilotchain.config import REDIS_URL
from pilotchain.settings import Setting, SettingsGroup
from runner.localnet import LocalNetwork
from runner.services import BackgroundService, ServiceError


@dataclass(frozen=True)
class RedisSettings:
    """Where ``./scripts/up`` runs its Redis, unless REDIS_URL names another."""

    host: str = "127.0.0.1"
    port: int = 6379
    data_dir: Path = Path("data/redis")
    url_override: str | None = None

    @property
    def url(self) -> str:
        return self.url_override or f"redis://{self.host}:{self.port}/0"

    @classmethod
    def from_env(cls, env: Mapping[str, str], data_dir: Path) -> RedisSettings:
        values = REDIS_SETTINGS.read(env)
        url = values.pop("redis_url")
        override = url if env.get("REDIS_URL", "").strip() else None
        return cls(data_dir=data_dir, url_override=override, **values)


_D = RedisSettings()
REDIS_SETTINGS = SettingsGroup(
    "Redis", "redis",
    "The Redis that holds the trade stream and the faucet's claim limits. `./scripts/up` "
    "runs Debian's redis-server (append-only, in `<NATIVE_DATA_DIR>/redis`) unless "
    "`REDIS_URL` names one you run yourself.",
    (
        Setting("REDIS_HOST", "host", "str", _D.host, "where `./scripts/up` runs its Redis"),
        Setting("REDIS_PORT", "port", "int", _D.port, "the port of that Redis", minimum=1),
        REDIS_URL,
    ),
)


class RedisService(BackgroundService):
    """redis-server as a background process, started only when no external URL is set."""

    name = "redis"
    start_timeout = 30.0

    def __init__(self, settings: RedisSettings, state_dir: Path) -> None:
        super().__init__(state_dir, {"PATH": "/usr/bin:/bin"})
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        # redis-server rewrites its command line and environment; its working directory
        # (the data directory) is what identifies it.
        self.marker = str(self.data_dir)
        self.cwd = self.data_dir

    @property
    def external(self) -> bool:
        return self.settings.url_override is not None

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server is not installed; run ./scripts/up (it installs Debian's "
                "redis-server) or set REDIS_URL to a Redis you run yourself."
            )
        return [binary, "--bind", self.settings.host, "--port", str(self.settings.port),
                "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--protected-mode", "no"]

    def process_env(self, net: LocalNetwork | None) -> dict[str, str]:
        return dict(self.env)

    def start(self, net: LocalNetwork | None = None) -> bool:
        """Start redis-server unless it runs already (or Redis is external); wait for PING."""
        if self.external:
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().start(net)

    def probe(self) -> bool:
        client = redis.Redis.from_url(self.settings.url, socket_timeout=2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def wait_ready(self) -> None:
        if self.external:
            return
        super().wait_ready()

    def stop(self) -> bool:
        return True if self.external else super().stop()

    def status(self) -> dict[str, Any]:
        return {"redis_url": self.settings.url}
