"""The stack's Redis takes only clients with its password, and every client that lacks it (or
finds no Redis at all) says so in one sentence naming the setting, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from bridge_fixtures import START_SECONDS

from pilotchain.chain import wait_for
from pilotchain.settings import PROJECT_ROOT
from runner.ports import free_port
from runner.redis import RedisService


def without_password(url: str) -> str:
    return "redis://" + url.split("@", 1)[1]


def bridge_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("REDIS_", "BRIDGE_", "RPC_", "KEYS_"))}
    return {**clean, "REDIS_URL": redis_url, "KEYS_DIR": str(tmp_path / "keys"),
            "BRIDGE_METRICS_PORT": str(free_port()), "BRIDGE_BACKOFF_MAX": "0.5",
            "RPC_URL": f"http://127.0.0.1:{free_port()}"}


def test_redis_refuses_a_client_without_the_password(redis_server: RedisService,
                                                     redis_url: str) -> None:
    assert "****" not in redis_url and "@" in redis_url  # the fixture's Redis has a password
    stranger = redis.Redis.from_url(without_password(redis_url), socket_timeout=2)
    try:
        with pytest.raises(redis.AuthenticationError):
            stranger.xadd("pilotchain:trades", {"event": "{}"})
    finally:
        stranger.close()
    assert redis.Redis.from_url(redis_url).ping()
    assert redis_server.status() == {"redis_url": redis_server.connection.shown_url}
    assert redis_server.connection.password not in str(redis_server.status())


def test_the_bridge_refused_by_redis_exits_with_one_sentence(redis_url: str,
                                                              tmp_path: Path) -> None:
    wrong = redis_url.replace("://:", "://:wrong", 1)
    result = subprocess.run([sys.executable, "-m", "bridge"], cwd=PROJECT_ROOT, timeout=180,
                            env=bridge_env(wrong, tmp_path), capture_output=True, text=True,
                            check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pilotchain-bridge: Redis at redis://:****@127.0.0.1:")
    assert "refused the bridge" in last and "REDIS_URL" in last
    assert "wrong" not in result.stderr


def test_the_bridge_waits_for_an_unreachable_redis_naming_the_setting(tmp_path: Path) -> None:
    log = tmp_path / "bridge.log"
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    with log.open("w") as out:
        bridge = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=PROJECT_ROOT,
                                  env=bridge_env(url, tmp_path), stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Waiting for Redis at" in log.read_text(), timeout=START_SECONDS,
                 what="the bridge to say it waits for Redis")
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=60)
    text = log.read_text()
    assert "Traceback" not in text and "secret" not in text
    waiting = next(line for line in text.splitlines() if "Waiting for Redis at" in line)
    assert "redis://:****@127.0.0.1:" in waiting
    assert "(set by REDIS_URL, or REDIS_HOST and REDIS_PORT)" in waiting
    assert "Stopped before the bridge was ready." in text
