"""Who may upload readings over HTTP: credentials the operator issues, stored hashed.

A credential is ``<name>.<secret>``, sent as ``Authorization: Bearer <name>.<secret>``. The
operator issues one per meter database (``pilotchain uploaders issue NAME``), sees the secret
once, and can revoke it (``pilotchain uploaders revoke NAME``). The file keeps only the
SHA-256 of each secret: 256 random bits need no slow hash to resist guessing, and a slow one
would let any client make the door burn CPU. The door reads the file again whenever it
changes, so an issue or a revocation takes effect at the next upload, in every worker.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ingest.errors import IngestError

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
SCHEME = "Bearer"


class UploaderError(IngestError):
    """An uploader credential cannot be issued, revoked or read."""


@dataclass(frozen=True)
class Uploader:
    """One issued credential, as stored (never the secret)."""

    name: str
    digest: str
    issued_at: str


class Uploaders:
    """The credentials file: issue, revoke, list; ``check`` a presented credential."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._entries: dict[str, Uploader] = {}

    # -- the door ---------------------------------------------------------------------

    def check(self, credential: str) -> str | None:
        """The uploader's name if ``credential`` is a valid one, else None."""
        name, _, secret = credential.partition(".")
        if not NAME.fullmatch(name) or not secret:
            return None
        entry = self._current().get(name)
        if entry is None:
            return None
        presented = hashlib.sha256(secret.encode()).hexdigest()
        return name if hmac.compare_digest(presented, entry.digest) else None

    def _current(self) -> dict[str, Uploader]:
        """The entries, read again when the file changed (or appeared, or vanished)."""
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            self._seen, self._entries = None, {}
            return self._entries
        if seen != self._seen:
            self._entries = self._read()
            self._seen = seen
        return self._entries

    # -- the operator -----------------------------------------------------------------

    def issue(self, name: str, *, replace: bool = False) -> str:
        """A new credential for ``name`` (shown once: only its hash is kept)."""
        if not NAME.fullmatch(name):
            raise UploaderError(f"An uploader's name is 1 to 40 lowercase letters, digits and "
                                f"dashes, starting with a letter or digit, not {name!r}.")
        secret = secrets.token_urlsafe(32)
        with self._locked():
            entries = self._read()
            if name in entries and not replace:
                raise UploaderError(f"The uploader {name} already has a credential; revoke it "
                                    "first, or issue with --replace to swap it for a new one.")
            entries[name] = Uploader(name, hashlib.sha256(secret.encode()).hexdigest(),
                                     datetime.now(UTC).isoformat(timespec="seconds"))
            self._write(entries)
        return f"{name}.{secret}"

    def revoke(self, name: str) -> None:
        """Remove ``name``'s credential: its next upload is refused."""
        with self._locked():
            entries = self._read()
            if entries.pop(name, None) is None:
                raise UploaderError(f"No uploader {name!r} in {self.path}; `pilotchain "
                                    "uploaders list` shows those issued.")
            self._write(entries)

    def list(self) -> list[Uploader]:
        return sorted(self._read().values(), key=lambda entry: entry.name)

    # -- the file ---------------------------------------------------------------------

    def _read(self) -> dict[str, Uploader]:
        try:
            body = json.loads(self.path.read_text())
            return {name: Uploader(name, str(entry["sha256"]), str(entry["issued_at"]))
                    for name, entry in body["uploaders"].items()}
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise UploaderError(f"The uploaders file {self.path} cannot be read "
                                f"({error.strerror}).") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UploaderError(f"The uploaders file {self.path} is damaged; restore it from a "
                                "backup or delete it and issue the credentials again.") from None

    def _write(self, entries: dict[str, Uploader]) -> None:
        body = {"uploaders": {e.name: {"sha256": e.digest, "issued_at": e.issued_at}
                              for e in sorted(entries.values(), key=lambda e: e.name)}}
        # Written beside and renamed over: a door reading it never sees half a file.
        partial = self.path.with_name(self.path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(body, indent=2) + "\n")
        os.replace(partial, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two operators issuing at once would lose one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def bearer(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, None if there is none."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == SCHEME.lower() else None
