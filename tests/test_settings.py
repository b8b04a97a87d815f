"""Settings as a user meets them: `pilotchain config`, clear errors, defaults that agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from bridge.config import BridgeSettings, StreamSettings
from faucet.config import FaucetSettings
from pilotchain.config import DEFAULT_REDIS_URL, RedisConnection, masked_url
from pilotchain.errors import ConfigError
from pilotchain.settings import PROJECT_ROOT, local_url


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


def test_every_service_reaches_the_same_redis(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    (keys / "redis").mkdir(parents=True)
    (keys / "redis" / "password").write_text("s3cret/+\n")  # throwaway test password
    env = {"KEYS_DIR": str(keys), "REDIS_PORT": "6400"}
    urls = {
        BridgeSettings.from_env(env).redis_url,
        StreamSettings.from_env(env).redis_url,
        FaucetSettings.from_env(env).redis_url,
        RedisConnection.from_env(env).url,
    }
    assert urls == {"redis://:s3cret%2F%2B@127.0.0.1:6400/0"}
    assert masked_url(urls.pop()) == "redis://:****@127.0.0.1:6400/0"
    no_password = {"KEYS_DIR": str(tmp_path / "none")}
    assert RedisConnection.from_env(no_password).url == DEFAULT_REDIS_URL


def test_a_redis_url_is_used_as_given() -> None:
    given = RedisConnection.from_env({"REDIS_URL": "redis://:pw@db:6379/2"})
    assert given.url == "redis://:pw@db:6379/2" and given.external
    assert "pw" not in repr(given)


def test_a_missing_password_file_named_by_the_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        RedisConnection.from_env({"REDIS_PASSWORD_FILE": str(tmp_path / "nope")})
    assert str(error.value) == (
        f"REDIS_PASSWORD_FILE names {tmp_path / 'nope'}, which does not exist; run "
        "'pilotchain init' to create the Redis password, or correct the setting.")


@pytest.mark.parametrize(("host", "url"), [
    ("0.0.0.0", "http://127.0.0.1:9114"), ("::", "http://127.0.0.1:9114"),
    ("", "http://127.0.0.1:9114"), ("10.1.2.3", "http://10.1.2.3:9114"),
    ("::1", "http://[::1]:9114"), ("metrics.lan", "http://metrics.lan:9114"),
])
def test_every_service_s_local_url_reaches_its_port_from_this_machine(host: str, url: str) -> None:
    """One rule for the bridge's, ingest's, closer's, faucet's and portal's metrics URLs (they
    had two copies, one of which made ``http://:::9114`` of ``::``)."""
    assert local_url(host, 9114) == url
    if host:
        bridge = BridgeSettings.from_env({"BRIDGE_METRICS_HOST": host,
                                          "BRIDGE_METRICS_PORT": "9114"})
        assert bridge.metrics_url == url
