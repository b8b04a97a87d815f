"""What the blueprints share at the HTTP edge: the app's services, the signed-in session,
the privacy rule, and the status and JSON body of each PortalError."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Response, current_app, jsonify, session

from portal.errors import PortalError
from portal.siwe import SignInRefused
from portal.web.config import WebSettings
from portal.web.ledger import (
    BadParticipantId,
    Ledger,
    LedgerUnavailable,
    TransactionRefused,
)
from portal.web.operations import DeadLetters
from portal.web.store import NonceRefused, Session, SignInStore

EXTENSION = "pilotchain-portal"
SESSION_KEY = "sid"


class NotSignedIn(PortalError):
    """The request needs a signed-in wallet (401)."""


class NotYours(PortalError):
    """A participant asked for another participant's data (403)."""


class NotRegistered(PortalError):
    """The wallet signed in correctly but belongs to no participant (403)."""


class OperatorOnly(PortalError):
    """Only the grid operator may do this (403)."""


class BadRequest(PortalError):
    """The request itself is wrong (400)."""


@dataclass(frozen=True)
class Services:
    settings: WebSettings
    store: SignInStore
    ledger: Ledger
    dead_letters: DeadLetters


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION]
    return found


def current_session() -> Session | None:
    """The signed-in session of this request, if any."""
    sid = session.get(SESSION_KEY)
    return services().store.session(sid) if isinstance(sid, str) else None


def signed_in() -> Session:
    found = current_session()
    if found is None:
        raise NotSignedIn("Sign in with your wallet first (or again: the sign-in has ended).")
    return found


def may_see(participant: str) -> Session:
    """The session, if it may see ``participant``'s data: its own, or anyone's for the
    operator; NotYours otherwise."""
    who = signed_in()
    if not who.is_operator and who.participant != participant.lower():
        raise NotYours("You may see only your own participant's data.")
    return who


def operator() -> Session:
    who = signed_in()
    if not who.is_operator:
        raise OperatorOnly("Only the grid operator's wallet may do this.")
    return who


STATUS: tuple[tuple[type[PortalError], int], ...] = (
    (BadRequest, 400), (BadParticipantId, 400), (TransactionRefused, 400),
    (SignInRefused, 401), (NonceRefused, 401), (NotSignedIn, 401), (NotYours, 403),
    (NotRegistered, 403), (OperatorOnly, 403),
    (LedgerUnavailable, 503))


def status_for(error: PortalError) -> int:
    return next((status for kind, status in STATUS if isinstance(error, kind)), 500)


def error_json(error: PortalError) -> tuple[Response, int]:
    return jsonify({"error": str(error)}), status_for(error)


def sentence_json(sentence: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": sentence}), status
