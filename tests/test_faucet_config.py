"""The faucet's parts that need no chain: settings, address checks, wording, the send lock
and the key loading (whose errors must never echo a key)."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from eth_account import Account
from limits import parse

from faucet.addresses import BAD_CHECKSUM, NOT_HEX, ZERO, parse_address
from faucet.app import create_app
from faucet.claims import format_units
from faucet.config import FaucetSettings
from faucet.coordination import SendLock
from faucet.errors import InvalidAddress
from faucet.limits import describe_limit, describe_wait
from pilotchain.errors import ConfigError

# -- settings ----------------------------------------------------------------------------


def test_defaults() -> None:
    settings = FaucetSettings.from_env({})
    assert settings.amount_wei == 10**18
    assert settings.address_limit == "1 per 24 hours" and settings.ip_limit == "10 per 24 hours"
    assert settings.trusted_proxies == 0 and settings.cors_origins == ()
    assert settings.path_prefix == "/faucet" and settings.prefixes == ("", "/faucet")
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 9000, 4)
    assert settings.keystore_file.parts[-3:] == ("keys", "faucet", "keystore.json")
    assert settings.password_file.parts[-3:] == ("keys", "faucet", "password")
    assert settings.rpc_url == settings.public_rpc_url == "http://127.0.0.1:8545"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"


def test_settings_are_read_and_typed() -> None:
    settings = FaucetSettings.from_env({
        "FAUCET_AMOUNT": "0.5", "FAUCET_ADDRESS_LIMIT": "2/day", "FAUCET_IP_LIMIT": "5/hour;20/day",
        "FAUCET_TRUSTED_PROXIES": "2", "FAUCET_CORS_ORIGINS": "https://a.example/, http://b:3000",
        "FAUCET_PATH_PREFIX": "old/faucet/", "RPC_URL": "http://rpc-node:8545",
        "FAUCET_PUBLIC_RPC_URL": "https://rpc.pilot.example", "KEYS_DIR": "/srv/keys",
        "FAUCET_PORT": "9100", "FAUCET_LOCK_FILE": "/run/faucet.lock",
    })
    assert settings.amount_wei == 5 * 10**17
    assert [str(item) for item in settings.ip_limits] == ["5 per 1 hour", "20 per 1 day"]
    assert settings.trusted_proxies == 2
    assert settings.cors_origins == ("https://a.example", "http://b:3000")
    assert settings.path_prefix == "/old/faucet"
    assert settings.rpc_url == "http://rpc-node:8545"
    assert settings.public_rpc_url == "https://rpc.pilot.example"
    assert settings.keystore_file == Path("/srv/keys/faucet/keystore.json")
    assert settings.port == 9100 and settings.lock_file == Path("/run/faucet.lock")
    assert FaucetSettings.from_env({"FAUCET_PATH_PREFIX": "none"}).prefixes == ("",)
    metrics = FaucetSettings.from_env({"FAUCET_METRICS_PORT": "0", "FAUCET_LOW_BALANCE": "2.5"})
    assert (metrics.metrics_port, metrics.low_balance_wei) == (0, 25 * 10**17)
    assert FaucetSettings().metrics_url == "http://127.0.0.1:9114"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("FAUCET_AMOUNT", "lots", "FAUCET_AMOUNT must be a positive number of PILOT with at most "
                              "18 decimals, like 1 or 0.5, not 'lots'."),
    ("FAUCET_AMOUNT", "0", "FAUCET_AMOUNT must be a positive number"),
    ("FAUCET_AMOUNT", "1e-19", "FAUCET_AMOUNT must be a positive number"),
    ("FAUCET_ADDRESS_LIMIT", "often",
     "FAUCET_ADDRESS_LIMIT must be a rate such as '1 per 24 hours', '10/day' or "
     "'5/hour;20/day', not 'often'."),
    ("FAUCET_IP_LIMIT", "0/day", "FAUCET_IP_LIMIT must be a rate"),
    ("FAUCET_TRUSTED_PROXIES", "-1", "FAUCET_TRUSTED_PROXIES must be at least 0, not -1."),
    ("FAUCET_PORT", "web", "FAUCET_PORT must be a whole number, not 'web'."),
    ("FAUCET_PATH_PREFIX", "/a b", "FAUCET_PATH_PREFIX must be a plain URL path"),
    ("FAUCET_METRICS_PORT", "9000", "FAUCET_METRICS_PORT must differ from FAUCET_PORT (9000): "
                                    "the metrics have a port of their own, never the public one."),
    ("FAUCET_LOW_BALANCE", "-5", "FAUCET_LOW_BALANCE must be a positive number of PILOT"),
])
def test_bad_settings_are_refused_naming_the_setting(name: str, value: str,
                                                      message: str) -> None:
    with pytest.raises(ConfigError) as error:
        FaucetSettings.from_env({name: value})
    assert str(error.value).startswith(message)


def test_secrets_stay_out_of_the_settings_repr() -> None:
    key = Account.create().key.hex()
    settings = FaucetSettings.from_env({"FAUCET_PRIVATE_KEY": key,
                                        "FAUCET_SECRET_KEY": "session-secret"})
    assert settings.private_key == key
    assert key not in repr(settings) and "session-secret" not in repr(settings)


# -- the key -----------------------------------------------------------------------------

def test_a_bad_private_key_is_refused_without_echoing_it() -> None:
    bad = "0x" + "ab" * 31
    with pytest.raises(ConfigError) as error:
        create_app({"FAUCET_PRIVATE_KEY": bad})
    assert str(error.value) == ("FAUCET_PRIVATE_KEY is not a private key: it must be 64 "
                                "hexadecimal digits, optionally after 0x.")
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_keystore_problems_name_the_file(tmp_path: Path) -> None:
    missing = {"FAUCET_KEYSTORE": str(tmp_path / "none.json"),
               "FAUCET_PASSWORD_FILE": str(tmp_path / "password")}
    with pytest.raises(ConfigError, match=r"The faucet's key file .*none\.json is missing"):
        create_app(missing)
    account = Account.create()
    keystore = tmp_path / "keystore.json"
    keystore.write_text(json.dumps(Account.encrypt(account.key, "right", iterations=2)))
    (tmp_path / "password").write_text("wrong\n")
    with pytest.raises(ConfigError) as error:
        create_app({"FAUCET_KEYSTORE": str(keystore),
                    "FAUCET_PASSWORD_FILE": str(tmp_path / "password")})
    assert str(error.value) == (f"The password in {tmp_path / 'password'} does not open the "
                                f"keystore {keystore}.")


# -- addresses and wording ---------------------------------------------------------------

def test_addresses_in_any_case_are_checksummed_and_mixed_case_is_checked() -> None:
    valid = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert parse_address(valid.lower()) == valid
    assert parse_address("0X" + valid[2:].upper()) == valid
    assert parse_address(f"  {valid}\n") == valid
    for raw, message in [(valid.replace("aA", "Aa", 1), BAD_CHECKSUM),
                         ("0x" + "0" * 40, ZERO), ("0x" + "z" * 40, NOT_HEX)]:
        with pytest.raises(InvalidAddress) as error:
            parse_address(raw)
        assert str(error.value) == message


@pytest.mark.parametrize(("seconds", "text"), [
    (1, "1 s"), (59, "59 s"), (60, "1 min"), (61, "2 min"), (3600, "1 h"),
    (86_399, "24 h"), (86_340, "23 h 59 min"),
])
def test_waits_are_rounded_up_for_people(seconds: int, text: str) -> None:
    assert describe_wait(seconds) == text


def test_limits_and_amounts_in_words() -> None:
    assert describe_limit(parse("1 per 24 hours")) == "1 claim every 24 hours"
    assert describe_limit(parse("10/day")) == "10 claims a day"
    assert describe_limit(parse("3/hour")) == "3 claims an hour"
    assert format_units(10**18) == "1" and format_units(25 * 10**16) == "0.25"
    assert format_units(10**24 + 1) == "1000000.000000000000000001"


# -- the send lock -----------------------------------------------------------------------

def test_the_send_lock_keeps_the_nonce_for_its_own_account_only(tmp_path: Path) -> None:
    path = tmp_path / "send.lock"
    ours = SendLock(path, "0xAbC0000000000000000000000000000000000001")
    with ours:
        assert ours.load() is None
        ours.save(41)
        assert ours.load() == 41
    theirs = SendLock(path, "0x0000000000000000000000000000000000000002")
    with theirs:
        assert theirs.load() is None
    ours.forget()
    with ours:
        assert ours.load() is None


def test_the_send_lock_excludes_other_processes(tmp_path: Path) -> None:
    """While another process holds the lock, this one cannot take it; once it lets go, the
    nonce it saved is what this one reads."""
    path = tmp_path / "send.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from faucet.coordination import SendLock
        lock = SendLock(Path({str(path)!r}), "0x01")
        with lock:
            lock.save(7)
            print("held", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        lock = SendLock(path, "0x01")
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock._file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.stdin.write("done\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        with lock:
            assert lock.load() == 7
    finally:
        holder.kill()
        holder.wait()
