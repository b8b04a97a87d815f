"""The faucet's signing key: from FAUCET_PRIVATE_KEY, else from a keystore file and its
password file. The key stays in memory; no error message or log line ever contains it."""

from __future__ import annotations

import json

from eth_account import Account
from eth_account.signers.local import LocalAccount

from faucet.config import FaucetSettings
from pilotchain.errors import ConfigError


def load_account(settings: FaucetSettings) -> LocalAccount:
    """The faucet's account, or a ConfigError naming the setting or file to fix."""
    if settings.private_key:
        try:
            account: LocalAccount = Account.from_key(settings.private_key)
            return account
        except Exception:  # whatever the reason, never echo the value
            raise ConfigError(
                "FAUCET_PRIVATE_KEY is not a private key: it must be 64 hexadecimal digits, "
                "optionally after 0x."
            ) from None
    return unlock_keystore(settings)


def unlock_keystore(settings: FaucetSettings) -> LocalAccount:
    """Decrypt FAUCET_KEYSTORE with the password in FAUCET_PASSWORD_FILE."""
    keystore, password_file = settings.keystore_file, settings.password_file
    try:
        encrypted = json.loads(keystore.read_text())
        password = password_file.read_text().strip()
    except FileNotFoundError as missing:
        raise ConfigError(
            f"The faucet's key file {missing.filename} is missing; run 'pilotchain init', or "
            "set FAUCET_KEYSTORE and FAUCET_PASSWORD_FILE (or FAUCET_PRIVATE_KEY)."
        ) from None
    except (OSError, ValueError):
        raise ConfigError(f"{keystore} is not a readable keystore (JSON) file.") from None
    try:
        unlocked: LocalAccount = Account.from_key(Account.decrypt(encrypted, password))
        return unlocked
    except Exception:  # a wrong password and a damaged file look alike
        raise ConfigError(
            f"The password in {password_file} does not open the keystore {keystore}."
        ) from None
