"""What the blueprints share at the HTTP edge: the app's services, the signed-in session,
the privacy rule, participant ids in one form, the request body, the client's address, and
the status and JSON body of each PortalError, its sentence in the request's language."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, jsonify, request, session

from portal.errors import PortalError
from portal.events import id_text
from portal.names import NameReader
from portal.siwe import SignInRefused
from portal.web.config import WebSettings
from portal.web.i18n import chosen_language, say
from portal.web.ledger import (
    BadParticipantId,
    Ledger,
    LedgerUnavailable,
    TransactionRefused,
    id_bytes,
)
from portal.web.metrics import PortalMetrics
from portal.web.operations import DeadLetters
from portal.web.store import NonceRefused, Session, SignInStore, TooManyChallenges

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
    names: NameReader
    metrics: PortalMetrics


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


def canonical_id(participant: str) -> str:
    """A participant id in the one form the index and sessions use (a uuid, or 0x-hex for a
    bytes32 that is not one), whichever form was given: ``0x`` and the 64 hex digits of a
    uuid's bytes32 name the same participant as the uuid. BadParticipantId (400) if it is
    neither form."""
    return id_text(id_bytes(participant))


def may_see(participant: str) -> str:
    """``participant``'s canonical id, if the signed-in session may see its data: its own,
    or anyone's for the operator. NotSignedIn first (nobody learns anything about ids before
    signing in), then BadParticipantId for an id of neither form, then NotYours."""
    who = signed_in()
    wanted = canonical_id(participant)
    if not who.is_operator and who.participant != wanted:
        raise NotYours("You may see only your own participant's data.")
    return wanted


def operator() -> Session:
    who = signed_in()
    if not who.is_operator:
        raise OperatorOnly("Only the grid operator's wallet may do this.")
    return who


STATUS: tuple[tuple[type[PortalError], int], ...] = (
    (BadRequest, 400), (BadParticipantId, 400), (TransactionRefused, 400),
    (SignInRefused, 401), (NonceRefused, 401), (NotSignedIn, 401), (NotYours, 403),
    (NotRegistered, 403), (OperatorOnly, 403), (TooManyChallenges, 429),
    (LedgerUnavailable, 503))


def status_for(error: PortalError) -> int:
    return next((status for kind, status in STATUS if isinstance(error, kind)), 500)


def error_json(error: PortalError) -> tuple[Response, int, dict[str, str]]:
    """``{"error": sentence}`` with its status (and ``Retry-After`` for a 429), the sentence
    in the request's language."""
    headers = ({"Retry-After": str(error.retry_after)}
               if isinstance(error, TooManyChallenges) else {})
    body, status = sentence_json(error.phrase, status_for(error))
    return body, status, headers


def json_body() -> Any:
    """The request's JSON body (None if it is not JSON); a body nested too deeply for the
    parser is a 400 with a sentence, not a RecursionError. (py_ecc, imported with web3,
    raises the recursion limit to 100,000, so within PORTAL_MAX_BODY_BYTES this does not
    happen today; with Python's default limit of 1,000 a 2 kB body would do it.)"""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply; send a flat JSON object."
                         ) from None


def client_key() -> str:
    """Whom per-client limits count: the peer's IPv4 address, or its IPv6 /64 (one host's
    share of a network, which hands a host many addresses). Behind PORTAL_TRUSTED_PROXIES
    werkzeug's ProxyFix has put the forwarded client in ``remote_addr``."""
    raw = request.remote_addr or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        # Not an address: a proxy's X-Forwarded-For is, so a client wrote this. Counted all
        # the same, by a digest, so no text of its choosing reaches the database.
        return "other:" + hashlib.sha256(raw.encode(errors="replace")).hexdigest()[:16]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def sentence_json(sentence: str, status: int) -> tuple[Response, int]:
    """``{"error": sentence}`` in the request's language (``sentence`` is English, a plain
    one or a Phrase with its values)."""
    return jsonify({"error": say(chosen_language(), sentence)}), status
