"""Sign-in state in the portal database, shared by every gunicorn worker: nonces issued for
sign-in messages (single use, bound to a wallet, expiring) and the sessions they open.

A nonce is consumed by deleting its row: of two requests presenting the same nonce, only the
one whose DELETE touched the row goes on, whichever worker serves it.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

from portal.db import Database
from portal.errors import PortalError

Role = Literal["participant", "operator"]


class NonceRefused(PortalError):
    """The sign-in message's nonce was never issued here, was used, or has expired."""


@dataclass(frozen=True)
class Session:
    """Who is signed in: the wallet, its participant id (None for an operator without one)
    and whether it is the grid operator."""

    id: str
    wallet: str
    participant: str | None
    role: Role
    expires_at: int

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


class SignInStore:
    """Nonces and sessions; one database connection per thread (gthread workers)."""

    def __init__(self, database_url: str, *, nonce_seconds: int, session_seconds: int) -> None:
        self.database_url = database_url
        self.nonce_seconds = nonce_seconds
        self.session_seconds = session_seconds
        self._local = threading.local()

    @property
    def db(self) -> Database:
        found: Database | None = getattr(self._local, "db", None)
        if found is None:
            found = Database(self.database_url)
            self._local.db = found
        return found

    def migrate(self) -> None:
        """Create or upgrade the tables (the indexer's migrations, which include these)."""
        self.db.migrate()

    def issue_nonce(self, wallet: str) -> str:
        """A fresh nonce for a sign-in message of ``wallet``; old expired ones are swept."""
        now = int(time.time())
        self.db.execute("DELETE FROM web_nonces WHERE expires_at <= ?", (now,))
        nonce = secrets.token_hex(16)
        self.db.execute("INSERT INTO web_nonces (nonce, wallet, expires_at) VALUES (?, ?, ?)",
                        (nonce, wallet.lower(), now + self.nonce_seconds))
        return nonce

    def consume_nonce(self, nonce: str, wallet: str) -> None:
        """Use up ``nonce``, which must have been issued to ``wallet`` and not have expired;
        it is gone afterwards either way."""
        found = self.db.fetch("SELECT wallet, expires_at FROM web_nonces WHERE nonce = ?",
                              (nonce,))
        touched = self.db.execute("DELETE FROM web_nonces WHERE nonce = ?", (nonce,))
        if not found or touched != 1:
            raise NonceRefused("This sign-in message was already used or was not issued by "
                               "this portal; sign in again.")
        issued_to, expires_at = str(found[0][0]), int(found[0][1])
        if expires_at <= int(time.time()):
            raise NonceRefused("This sign-in message waited too long for its signature; "
                               "sign in again.")
        if issued_to != wallet.lower():
            raise NonceRefused("This sign-in message was issued to another wallet; sign in "
                               "again.")

    def open_session(self, wallet: str, participant: str | None, role: Role) -> Session:
        now = int(time.time())
        self.db.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now,))
        session = Session(secrets.token_urlsafe(32), wallet, participant, role,
                          now + self.session_seconds)
        self.db.execute(
            "INSERT INTO web_sessions (id, wallet, participant, role, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (session.id, session.wallet, session.participant, session.role,
             session.expires_at))
        return session

    def session(self, session_id: str) -> Session | None:
        """The live session of that id, None if unknown, signed out or expired."""
        found = self.db.fetch("SELECT id, wallet, participant, role, expires_at "
                              "FROM web_sessions WHERE id = ?", (session_id,))
        if not found or int(found[0][4]) <= int(time.time()):
            return None
        ident, wallet, participant, role, expires_at = found[0]
        return Session(str(ident), str(wallet), participant, role, int(expires_at))

    def close_session(self, session_id: str) -> None:
        self.db.execute("DELETE FROM web_sessions WHERE id = ?", (session_id,))
