"""Sign-in state in the portal database, shared by every gunicorn worker: nonces issued for
sign-in messages (single use, bound to a wallet, to the exact message and to the client that
asked, expiring) and the sessions they open.

A nonce is consumed by deleting its row: of two requests presenting the same nonce, only the
one whose DELETE touched the row goes on, whichever worker serves it.

How many messages wait for a signature is bounded, so that asking for challenges in a loop
neither fills the database nor locks a wallet out: per wallet, a new message replaces the
oldest beyond ``challenges_per_wallet`` (refusing instead would let anyone block a wallet's
sign-in by asking for its messages); per client, more than ``challenges_per_client`` waiting
are refused until the oldest expires.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

from portal.db import Database
from portal.errors import PortalError

Role = Literal["participant", "operator"]
# The advisory lock that serialises issuing nonces on PostgreSQL (any fixed number).
NONCE_LOCK = 4361


class NonceRefused(PortalError):
    """The sign-in message's nonce was never issued here, was used, or has expired, or the
    message is not the one issued with it."""


class TooManyChallenges(PortalError):
    """One client has asked for more sign-in messages than may wait at once (429)."""

    def __init__(self, template: str, /, *, retry_after: int, **values: object) -> None:
        super().__init__(template, **values)
        self.retry_after = retry_after


def digest(message: str) -> str:
    """What is kept of an issued message: enough to recognise it exactly."""
    return hashlib.sha256(message.encode()).hexdigest()


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

    def __init__(self, database_url: str, *, nonce_seconds: int, session_seconds: int,
                 per_wallet: int = 5, per_client: int = 20) -> None:
        self.database_url = database_url
        self.nonce_seconds = nonce_seconds
        self.session_seconds = session_seconds
        self.per_wallet = per_wallet
        self.per_client = per_client
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

    @staticmethod
    def new_nonce() -> str:
        """A nonce for the next message (recorded by :meth:`issue` with the message)."""
        return secrets.token_hex(16)

    def issue(self, nonce: str, wallet: str, client: str, message: str) -> None:
        """Record that ``message`` (carrying ``nonce``) was issued to ``wallet`` at the request
        of ``client``; expired nonces are swept, the wallet's oldest beyond its limit dropped,
        and TooManyChallenges raised if the client has too many waiting."""
        issued_ns = time.time_ns()
        now = issued_ns // 10**9
        with self.db.writing() as tx:
            tx.lock(NONCE_LOCK)
            tx.execute("DELETE FROM web_nonces WHERE expires_at <= ?", (now,))
            count, oldest = tx.fetch("SELECT COUNT(*), MIN(expires_at) FROM web_nonces "
                                     "WHERE client = ?", (client,))[0]
            if int(count) >= self.per_client:
                wait = max(1, int(oldest) - now)
                raise TooManyChallenges(
                    "Too many sign-in messages were asked for from your network address "
                    "({most} may wait for a signature at once); sign the last one, or try "
                    "again in {wait}.", retry_after=wait, most=self.per_client,
                    wait=describe_wait(wait))
            waiting = [str(n) for (n,) in tx.fetch(
                "SELECT nonce FROM web_nonces WHERE wallet = ? ORDER BY issued_ns DESC, nonce",
                (wallet.lower(),))]
            for old in waiting[self.per_wallet - 1:]:
                tx.execute("DELETE FROM web_nonces WHERE nonce = ?", (old,))
            tx.execute("INSERT INTO web_nonces (nonce, wallet, client, message_sha256, "
                       "issued_ns, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (nonce, wallet.lower(), client, digest(message), issued_ns,
                        now + self.nonce_seconds))

    def consume_nonce(self, nonce: str, wallet: str, message: str) -> None:
        """Use up ``nonce``, which must have been issued to ``wallet`` with exactly
        ``message`` and not have expired; it is gone afterwards either way."""
        found = self.db.fetch("SELECT wallet, expires_at, message_sha256 FROM web_nonces "
                              "WHERE nonce = ?", (nonce,))
        touched = self.db.execute("DELETE FROM web_nonces WHERE nonce = ?", (nonce,))
        if not found or touched != 1:
            raise NonceRefused("This sign-in message was already used or was not issued by "
                               "this portal; sign in again.")
        issued_to, expires_at, issued = str(found[0][0]), int(found[0][1]), str(found[0][2])
        if expires_at <= int(time.time()):
            raise NonceRefused("This sign-in message waited too long for its signature; "
                               "sign in again.")
        if issued_to != wallet.lower():
            raise NonceRefused("This sign-in message was issued to another wallet; sign in "
                               "again.")
        if not secrets.compare_digest(issued, digest(message)):
            raise NonceRefused("This sign-in message is not the one the portal issued: it "
                               "was changed after it was issued, so nothing was signed in; "
                               "sign in again.")

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


def describe_wait(seconds: int) -> str:
    """``75`` -> "2 min", ``30`` -> "30 s": how long until a client may ask again."""
    return f"{seconds} s" if seconds < 60 else f"{-(-seconds // 60)} min"
