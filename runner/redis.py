"""A Redis server for the native stack and the tests: Debian's redis-server, durable, bounded
(``REDIS_MAXMEMORY``, refusing writes rather than evicting when full), with the password
``pilotchain init`` generated.

The bridge acknowledges a trade only after it is on chain, so the stream must survive a
Redis restart: append-only file, fsync every second, in a data directory of its own.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import redis

from pilotchain.config import RedisConnection
from runner.localnet import LocalNetwork
from runner.ports import free_port
from runner.services import BackgroundService, ServiceError


def private_connection() -> RedisConnection:
    """A Redis of its own for a test or a benchmark: a free port and a fresh password."""
    return RedisConnection(port=free_port(), password=secrets.token_hex(16))


class RedisService(BackgroundService):
    """redis-server as a background process, started only when no external URL is set."""

    name = "redis"
    start_timeout = 30.0
    others_need_it = True

    def __init__(self, connection: RedisConnection, data_dir: Path, state_dir: Path) -> None:
        super().__init__(state_dir, {"PATH": "/usr/bin:/bin"})
        self.connection = connection
        self.data_dir = data_dir.resolve()
        # redis-server rewrites its command line and environment; its working directory
        # (the data directory) is what identifies it.
        self.marker = str(self.data_dir)
        self.cwd = self.data_dir

    @property
    def url(self) -> str:
        """The URL clients connect with (password included)."""
        return self.connection.url

    @property
    def external(self) -> bool:
        return self.connection.external

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server is not installed; run ./scripts/up (it installs Debian's "
                "redis-server) or set REDIS_URL to a Redis you run yourself."
            )
        c = self.connection
        return [binary, str(self._config_file()), "--bind", c.host, "--port", str(c.port),
                "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--protected-mode", "yes"]

    def _config_file(self) -> Path:
        """The password goes in a private file, not on the command line where ps shows it."""
        path = self.data_dir / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as conf:
            if self.connection.password:
                conf.write(f"requirepass {self.connection.password}\n")
            # Bounded, and full means "refuse writes", never "evict": an evicted stream entry
            # would be a reading or a trade lost. The services turn a refusal into a 503 or a
            # wait; their streams are trimmed to what is unsettled, so room comes back.
            conf.write(f"maxmemory {self.connection.maxmemory}\n"
                       "maxmemory-policy noeviction\n")
        return path

    def process_env(self, net: LocalNetwork | None) -> dict[str, str]:
        return dict(self.env)

    def launch(self, net: LocalNetwork | None = None) -> bool:
        """Start redis-server unless it runs already (or Redis is external)."""
        if self.external:
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().launch(net)

    def probe(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            raise ServiceError(
                f"A Redis at {self.connection.shown_url} refused the stack's password: another "
                "Redis holds the port; stop it or choose another port with REDIS_PORT in .env."
            ) from None
        except redis.RedisError:
            return False
        finally:
            client.close()

    def wait_ready(self) -> None:
        if not self.external:
            super().wait_ready()

    def stop(self) -> bool:
        return True if self.external else super().stop()

    def status(self) -> dict[str, Any]:
        return {"redis_url": self.connection.shown_url}
