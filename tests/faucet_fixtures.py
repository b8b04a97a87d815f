"""Helpers for the faucet tests: settings for the session's chain, a faucet under real
gunicorn on a free port with its own Redis, and a record of everything the faucet answered
so the tests can show its private key never appears in a response or a log line."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from bridge_fixtures import PERIOD, STALL_BLOCKS
from web3 import Web3

from faucet.config import FaucetSettings
from pilotchain.chain import connect, wait_for_blocks
from runner.faucet import FaucetService
from runner.localnet import LocalNetwork
from runner.ports import free_port
from runner.redis import RedisService, private_connection

EXPLORER = "http://explorer.test"
UNIT = 10**18


def faucet_env(chain: LocalNetwork, redis_url: str, home: Path,
               **overrides: str) -> dict[str, str]:
    """The settings of a faucet for ``chain``, complete so no developer's .env leaks in.

    PILOTCHAIN_HOME points the child's project root (and so its .env) at ``home``.
    """
    role = chain.keys.role("faucet")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PILOTCHAIN_HOME": str(home),
        "RPC_URL": chain.rpc_url,
        "CHAIN_ID": str(chain.settings.chain_id),
        "NETWORK_NAME": chain.settings.network_name,
        "CURRENCY_SYMBOL": chain.settings.currency_symbol,
        "EXPLORER_URL": EXPLORER,
        "REDIS_URL": redis_url,
        "FAUCET_KEYSTORE": str(role.keystore),
        "FAUCET_PASSWORD_FILE": str(role.password_file),
        "FAUCET_AMOUNT": "1",
        "FAUCET_PATH_PREFIX": "/faucet",
        "FAUCET_LOCK_FILE": str(home / "faucet-send.lock"),
        "FAUCET_METRICS_PORT": str(free_port()),
    }
    env.update(overrides)
    return env


def assert_no_key(key: bytes, *texts: bytes | str, where: str = "output") -> None:
    """The private key's hex (with or without 0x, any case) is in none of ``texts``."""
    pattern = re.compile(re.escape(key.hex().encode()), re.IGNORECASE)
    assert len(key) == 32
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        assert not pattern.search(data), f"the faucet's private key appears in {where}"


def nonce(w3: Web3, address: str) -> int:
    """The account's next nonce, counting transactions still in the pool."""
    return w3.eth.get_transaction_count(address, "pending")


def pool_is_empty(w3: Web3) -> bool:
    """Nothing pending or queued in the RPC node's pool."""
    status = w3.manager.request_blocking("txpool_status", [])
    return int(status["pending"], 16) == 0 and int(status["queued"], 16) == 0


def wait_for_empty_pool(w3: Web3) -> None:
    """The RPC node's pool drained: each block takes hundreds of the faucet's transfers, so
    a few blocks do it (counted while the pool shrinks no further)."""
    def left() -> object:
        status = w3.manager.request_blocking("txpool_status", [])
        return status["pending"], status["queued"]

    wait_for_blocks(lambda: pool_is_empty(w3), w3=w3, blocks=STALL_BLOCKS // 3, period=PERIOD,
                    progress=left, why="a block takes hundreds of transfers",
                    what="the transaction pool to drain (txpool_status pending and queued 0)")


@dataclass
class RunningFaucet:
    """A faucet served by gunicorn; ``get``/``post`` keep every answer for the key check."""

    service: FaucetService
    chain: LocalNetwork
    key: bytes
    address: str
    answers: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def w3(self) -> Web3:
        return connect(self.chain.rpc_url)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.record(requests.post(self.url + path, timeout=60, **kwargs))

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.record(requests.get(self.url + path, timeout=60, **kwargs))

    def record(self, response: requests.Response) -> requests.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.answers.append(headers.encode() + b"\n\n" + response.content)
        return response

    def log_text(self) -> bytes:
        return self.service.log_file.read_bytes()


def start_gunicorn_faucet(chain: LocalNetwork, home: Path,
                          overrides: Mapping[str, str]) -> Iterator[RunningFaucet]:
    """Redis and the faucet (4 gunicorn workers) for ``chain``; both stopped afterwards."""
    redis_service = RedisService(private_connection(), home / "redis", home / "redis-pids")
    redis_service.start()
    try:
        env = faucet_env(chain, redis_service.url, home,
                         FAUCET_PORT=str(free_port()), FAUCET_WORKERS="4", **overrides)
        del env["RPC_URL"]  # as ./scripts/up does: the service takes it from the network
        service = FaucetService(FaucetSettings.from_env(env), home / "pids", env)
        try:
            assert service.start(chain)
            account = chain.keys.role("faucet").unlock()
            yield RunningFaucet(service, chain, bytes(account.key), account.address)
        finally:
            service.stop()
    finally:
        redis_service.stop()


@pytest.fixture(scope="module")
def gunicorn_faucet(chain: LocalNetwork, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[RunningFaucet]:
    """The faucet under real gunicorn (4 workers) for one test module, trusting one proxy
    (tests pick their client IP with X-Forwarded-For)."""
    home = tmp_path_factory.mktemp("faucet")
    yield from start_gunicorn_faucet(chain, home, {"FAUCET_TRUSTED_PROXIES": "1"})
