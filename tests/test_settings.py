"""Settings as a user meets them: `pilotchain config`, clear errors, defaults that agree."""

from __future__ import annotations

import os
import subprocess
import sys

from eth_account import Account

from bridge.config import BridgeSettings, StreamSettings
from faucet.config import FaucetSettings
from pilotchain.config import DEFAULT_REDIS_URL
from pilotchain.settings import PROJECT_ROOT
from runner.redis import RedisSettings


def run_config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Throwaway key material only: FAUCET_PRIVATE_KEY below is generated per run.
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("FAUCET_", "BRIDGE_", "REDIS_", "RPC_"))}
    return subprocess.run([sys.executable, "-m", "runner.cli", "config", *args],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60,
                          env={**clean, **env}, check=False)


def test_config_shows_every_setting_with_secrets_masked() -> None:
    key = Account.create().key.hex()
    result = run_config(FAUCET_PRIVATE_KEY=key, FAUCET_PORT="9100")
    assert result.returncode == 0, result.stderr
    assert key not in result.stdout and key[2:] not in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines()
             if line and not line.startswith("#")}
    assert "******** (set)" in lines["FAUCET_PRIVATE_KEY"]
    assert lines["FAUCET_PORT"].split()[1:] == ["9100"]
    assert lines["BRIDGE_MAX_BATCH"].endswith("(default)")


def test_config_names_each_invalid_setting_and_fails() -> None:
    result = run_config(FAUCET_AMOUNT="abc", BRIDGE_MAX_IN_FLIGHT="many")
    assert result.returncode == 1
    assert ("FAUCET_AMOUNT must be a positive number of PILOT with at most 18 decimals, like 1 "
            "or 0.5, not 'abc'.") in result.stdout
    assert "BRIDGE_MAX_IN_FLIGHT must be a whole number, not 'many'." in result.stdout
    assert "2 setting(s) are invalid" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_service_has_the_same_redis_url_by_default() -> None:
    urls = {
        BridgeSettings.from_env({}).redis_url,
        StreamSettings.from_env({}).redis_url,
        FaucetSettings.from_env({}).redis_url,
        RedisSettings.from_env({}, PROJECT_ROOT / "data").url,
    }
    assert urls == {DEFAULT_REDIS_URL}


def test_the_stack_redis_follows_redis_host_and_port_unless_a_url_is_given() -> None:
    own = RedisSettings.from_env({"REDIS_PORT": "6400"}, PROJECT_ROOT / "data")
    assert own.url == "redis://127.0.0.1:6400/0" and own.url_override is None
    other = RedisSettings.from_env({"REDIS_URL": "redis://db:6379/2"}, PROJECT_ROOT / "data")
    assert other.url == "redis://db:6379/2" and other.url_override == "redis://db:6379/2"
