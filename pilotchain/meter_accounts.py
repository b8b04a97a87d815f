"""Each meter's own MQTT account: issued when the meter is registered, never shared.

The account of meter ``0x<64 hex digits>`` is named exactly that. The broker binds a
client's id to its account (``use_username_as_clientid``), so a meter can neither take the
ingest's session nor another meter's, and its access list lets it publish only on its own
topic (``pattern write pilotchain/meters/%u/readings``). The password is shown to the
operator once, to install in the meter; the keys directory keeps only its hash, in
mosquitto's own password-file format (PBKDF2-SHA512, as ``mosquitto_passwd`` writes it), so
the broker reads the file as it is.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pilotchain.errors import PilotChainError

# mosquitto_passwd's own parameters (mosquitto 2.0): the broker reads them from each line.
ITERATIONS = 101
SALT_BYTES = 12


class MeterAccountError(PilotChainError):
    """A meter's MQTT account cannot be issued, revoked or read."""


def account_name(meter: bytes) -> str:
    """The MQTT account (and client id, and topic segment) of a meter: its id in hex."""
    return "0x" + meter.hex()


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """``password`` hashed as mosquitto_passwd does: ``$7$<iterations>$<salt>$<hash>``."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return (f"$7${ITERATIONS}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


class MeterAccounts:
    """The meters' password file (``<KEYS_DIR>/mqtt/meters.passwd``): one hashed line per
    meter, written by the operator's commands, read by the broker."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def issue(self, meter: bytes) -> str:
        """A new password for the meter's account (replacing any earlier one); shown once."""
        password = secrets.token_hex(24)
        name = account_name(meter)
        with self._locked():
            lines = {n: line for n, line in self._lines().items() if n != name}
            lines[name] = f"{name}:{mosquitto_hash(password)}"
            self._write(lines)
        return password

    def revoke(self, meter: bytes) -> bool:
        """Remove the meter's account; True if it had one."""
        name = account_name(meter)
        with self._locked():
            lines = self._lines()
            if lines.pop(name, None) is None:
                return False
            self._write(lines)
        return True

    def names(self) -> set[str]:
        return set(self._lines())

    def text(self) -> str:
        """The file's lines as the broker's password file takes them ("" for none)."""
        lines = self._lines()
        return "".join(f"{line}\n" for line in lines.values())

    def _lines(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise MeterAccountError(f"The meters' MQTT accounts in {self.path} cannot be read "
                                    f"({error.strerror}).") from None
        found = {}
        for line in text.splitlines():
            name, colon, _ = line.partition(":")
            if colon and name:
                found[name] = line
        return found

    def _write(self, lines: dict[str, str]) -> None:
        # Beside and renamed over: the broker never reads half a file.
        partial = self.path.with_name(self.path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{line}\n" for line in sorted(lines.values())))
        os.replace(partial, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two registrations at once would lose an account)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
