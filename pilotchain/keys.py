"""Generate the network's keys: bootnode node key, validator and service accounts.

Layout under the keys directory (never committed; ``pilotchain init`` creates it)::

    bootnode.key, bootnode.pub          node key (hex) and its enode public key
    <role>/keystore.json                 geth v3 keystore (scrypt)
    <role>/password                      the keystore's password
    <role>/address                       the checksummed account address
    validatorN/nodekey, nodekey.pub      the validator's p2p identity, so peers know its enode
    accounts.json                        every public address, by role

Roles are ``validator1..validatorN`` plus the service accounts in :data:`SERVICE_ROLES`
(funded in genesis) and :data:`LATE_ROLES` (created after genesis, funded by the operator).

On one organisation's host of a network of several (``pilotchain keys new --role``, see
docs/deployment.md) the same layout holds only that host's roles::

    bootnode.key, bootnode.pub           the bootnode
    validator/                           the signer: account and node key
    rpc/nodekey, nodekey.pub             the RPC node's p2p identity
    faucet/, bridge/, ... (APP_ACCOUNTS) the apps' accounts, Redis and MQTT passwords
    coordinator/                         the account that signs the network manifest
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys.datatypes import PrivateKey

from pilotchain.errors import PilotChainError

SERVICE_ROLES = ("faucet", "bridge", "operator")
# Accounts added after the first release: created beside an existing genesis (a new genesis
# would orphan a pilot's chain) and funded by a transfer from the operator at deployment.
LATE_ROLES = ("ingest", "closer")
# geth's own "light" scrypt parameter: fine for throwaway test keys, never for a pilot.
FAST_SCRYPT_N = 4096
# What one organisation's host may run, each with its own keys (``keys new --role``).
HOST_ROLES = ("bootnode", "validator", "rpc", "apps")
# The accounts of the apps (bridge, faucet, ingest, closer, the operator's commands).
APP_ACCOUNTS = (*SERVICE_ROLES, *LATE_ROLES)
# Where a host role's node key lives, relative to the keys directory.
NODE_KEY_FILES = {"bootnode": "bootnode.key", "validator": "validator/nodekey",
                  "rpc": "rpc/nodekey"}


class KeysError(PilotChainError):
    """A key file is missing, unreadable or would be overwritten."""


@dataclass(frozen=True)
class Role:
    """One generated account: where its files are and its address."""

    name: str
    directory: Path

    @property
    def keystore(self) -> Path:
        return self.directory / "keystore.json"

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    @property
    def nodekey_file(self) -> Path:
        return self.directory / "nodekey"

    @property
    def enode_pubkey(self) -> str:
        return (self.directory / "nodekey.pub").read_text().strip()

    @property
    def address(self) -> str:
        try:
            return (self.directory / "address").read_text().strip()
        except FileNotFoundError:
            raise KeysError(
                f"The {self.name} account has no keys in {self.directory}; run 'pilotchain init'."
            ) from None

    @property
    def password(self) -> str:
        """The keystore's password."""
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            raise KeysError(f"The {self.name} account's password is missing in "
                            f"{self.directory}; run 'pilotchain init'.") from None

    def unlock(self) -> LocalAccount:
        """Decrypt the keystore; the key stays in memory only."""
        try:
            encrypted = json.loads(self.keystore.read_text())
        except FileNotFoundError as missing:
            raise KeysError(
                f"The {self.name} account's {Path(missing.filename).name} is missing in "
                f"{self.directory}; run 'pilotchain init'."
            ) from None
        password = self.password
        try:
            account: LocalAccount = Account.from_key(Account.decrypt(encrypted, password))
            return account
        except ValueError:
            raise KeysError(
                f"The password in {self.password_file} does not open {self.keystore}."
            ) from None


class KeyStore:
    """The keys directory of one network."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def bootnode_key_file(self) -> Path:
        return self.directory / "bootnode.key"

    @property
    def bootnode_pubkey(self) -> str:
        try:
            return (self.directory / "bootnode.pub").read_text().strip()
        except FileNotFoundError:
            raise KeysError(
                f"No bootnode key in {self.directory}; run 'pilotchain init'."
            ) from None

    @property
    def redis_password_file(self) -> Path:
        """The password of the stack's Redis (generated, never committed)."""
        return self.directory / "redis" / "password"

    def ensure_redis_password(self) -> bool:
        """Create the Redis password unless it exists; True if it was created.

        Kept apart from :meth:`ensure`: a new Redis password needs no new genesis.
        """
        path = self.redis_password_file
        if path.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        self._write_private(path, secrets.token_hex(32) + "\n")
        return True

    def mqtt_password_file(self, user: str) -> Path:
        """The password of an account of the meters' MQTT broker (generated, never
        committed)."""
        return self.directory / "mqtt" / f"{user}.password"

    def ensure_mqtt_passwords(self, users: tuple[str, ...] = ("ingest", "monitor")
                              ) -> list[str]:
        """Create the broker's service accounts' passwords that are missing (the ingest's,
        the health checks'); return what was created. Like the Redis password, they need no
        new genesis. Meters get accounts of their own when registered
        (:mod:`pilotchain.meter_accounts`); a stack from before them keeps an unused
        ``meter.password``, which the broker no longer takes."""
        created = []
        for user in users:
            path = self.mqtt_password_file(user)
            if path.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
            self._write_private(path, secrets.token_hex(24) + "\n")
            created.append(f"mqtt/{user}.password")
        return created

    def ensure_late_accounts(self, *, fast: bool = False) -> list[str]:
        """Create the accounts of :data:`LATE_ROLES` that are missing; return their names.

        Kept apart from :meth:`ensure`, like the Redis password: they are not in genesis, so
        an existing pilot gets them without a new genesis.
        """
        created = [self.create_account(name, fast=fast).name for name in LATE_ROLES
                   if not (self.directory / name / "address").is_file()]
        if created:
            self._write_json("accounts.json", self.accounts())
        return created

    def role(self, name: str) -> Role:
        return Role(name, self.directory / name)

    def validators(self) -> list[Role]:
        """The validators created so far, in order (validator1, validator2, ...)."""
        found = []
        index = 1
        while (self.directory / f"validator{index}" / "address").is_file():
            found.append(self.role(f"validator{index}"))
            index += 1
        return found

    def accounts(self) -> dict[str, str]:
        """Every public address by role name."""
        roles = [*self.validators(), *(self.role(name) for name in (*SERVICE_ROLES, *LATE_ROLES))]
        return {role.name: role.address for role in roles if (role.directory / "address").is_file()}

    def ensure(self, validators: int = 3, *, force: bool = False, fast: bool = False) -> list[str]:
        """Create whatever is missing; return the names of what was created.

        Existing keys are kept unless ``force`` is set, because regenerating a
        validator key silently would fork a running pilot off its own chain.
        """
        if force and self.directory.exists():
            self._wipe()
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        created = []
        if not self.bootnode_key_file.is_file():
            self._write_nodekey(self.bootnode_key_file, self.directory / "bootnode.pub")
            created.append("bootnode")
        names = [f"validator{i}" for i in range(1, validators + 1)] + list(SERVICE_ROLES)
        for name in names:
            if not (self.directory / name / "address").is_file():
                self.create_account(name, fast=fast)
                created.append(name)
        self._write_json("accounts.json", self.accounts())
        return created

    def has_role(self, role: str) -> bool:
        """Whether this host's keys for ``role`` (of :data:`HOST_ROLES`, or the coordinator)
        exist."""
        if role in NODE_KEY_FILES:
            return (self.directory / NODE_KEY_FILES[role]).is_file()
        names = APP_ACCOUNTS if role == "apps" else (role,)
        return all((self.directory / name / "address").is_file() for name in names)

    def create_role(self, role: str, *, fast: bool = False) -> list[str]:
        """Create the keys of one host role; return what was created. Refuses to replace a
        key: a node with a new key is a stranger to the network manifest."""
        if self.has_role(role):
            raise KeysError(
                f"This host already has its {role} keys in {self.directory}; 'pilotchain keys "
                f"export --role {role}' prints their export again."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if role == "bootnode":
            self._write_nodekey(self.bootnode_key_file, self.directory / "bootnode.pub")
            return ["bootnode"]
        if role == "rpc":
            directory = self.directory / "rpc"
            directory.mkdir(exist_ok=True)
            os.chmod(directory, 0o700)
            self._write_nodekey(directory / "nodekey", directory / "nodekey.pub")
            return ["rpc"]
        if role == "apps":
            created = [self.create_account(name, fast=fast).name for name in APP_ACCOUNTS
                       if not (self.directory / name / "address").is_file()]
            self._write_json("accounts.json", self.accounts())
            if self.ensure_redis_password():
                created.append("redis/password")
            return created + self.ensure_mqtt_passwords()
        return [self.create_account(role, fast=fast).name]

    def node_pubkey(self, role: str) -> str:
        """The enode public key of this host's ``role`` node (bootnode, validator, rpc)."""
        path = self.directory / NODE_KEY_FILES[role]
        try:
            return path.with_suffix(".pub").read_text().strip()
        except FileNotFoundError:
            raise KeysError(
                f"This host has no {role} key ({path}); run 'pilotchain keys new --role {role}'."
            ) from None

    def create_account(self, name: str, *, fast: bool = False) -> Role:
        """Write a new keystore, password and address for ``name`` (refuses to overwrite)."""
        role = self.role(name)
        if role.keystore.exists():
            raise KeysError(
                f"{role.keystore} already exists; pass --force to regenerate every key."
            )
        account = Account.create()
        password = secrets.token_urlsafe(24)
        kdf_args = {"iterations": FAST_SCRYPT_N} if fast else {}
        encrypted = Account.encrypt(account.key, password, kdf="scrypt", **kdf_args)
        role.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(role.directory, 0o700)
        self._write_private(role.password_file, password + "\n")
        self._write_private(role.keystore, json.dumps(encrypted))
        if name.startswith("validator"):
            self._write_nodekey(role.nodekey_file, role.directory / "nodekey.pub")
        (role.directory / "address").write_text(account.address + "\n")
        return role

    def _write_nodekey(self, key_file: Path, pub_file: Path) -> None:
        """A p2p node key in geth's hex format, and the public key that names it in enodes."""
        private = PrivateKey(secrets.token_bytes(32))
        self._write_private(key_file, private.to_bytes().hex())
        pub_file.write_text(private.public_key.to_bytes().hex() + "\n")

    def _write_json(self, name: str, value: object) -> None:
        (self.directory / name).write_text(json.dumps(value, indent=2) + "\n")

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)

    def _wipe(self) -> None:
        for path in sorted(self.directory.rglob("*"), reverse=True):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
