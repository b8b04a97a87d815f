"""Sign-in with the wallet (EIP-4361), who is signed in, and sign-out.

1. ``POST /api/auth/challenge`` with ``{"address"}``: the server issues a single-use nonce
   bound to that wallet, to the exact message and to the client, and answers the message for
   the wallet to sign. The message names the domain and URI of the configuration
   (PORTAL_DOMAIN), never the request's Host: a signature a phishing page obtained for its
   own domain and relayed here is refused.
2. ``POST /api/auth/verify`` with ``{"message", "signature"}``: the message is parsed
   strictly, its nonce used up, the message compared with the one issued (character for
   character), checked (domain, URI, chain id, times, signer), and the wallet looked up on
   the contract: a participant's wallet or the contract's admin (the grid operator) gets a
   session; any failure leaves nobody signed in.
3. ``POST /api/auth/signout`` ends the session (server-side, so a copied cookie dies too).

Every POST carries the CSRF token (``X-CSRFToken``) that ``GET /api/me`` hands out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, session
from flask_wtf.csrf import generate_csrf
from web3 import Web3

from portal.errors import PortalError
from portal.siwe import (
    Expected,
    MalformedMessage,
    SignInRefused,
    SiweMessage,
    parse_message,
    verify,
)
from portal.web.http import (
    SESSION_KEY,
    BadRequest,
    NotRegistered,
    client_key,
    current_session,
    json_body,
    services,
)
from portal.web.ledger import LedgerUnavailable
from portal.web.store import NonceRefused, Role

STATEMENT = "Sign in to the PilotChain participant portal."

auth = Blueprint("auth", __name__)


def json_object() -> dict[str, Any]:
    body = json_body()
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object as the request body.")
    return body


@auth.get("/api/me")
def me() -> Response:
    """Who is signed in (nothing if nobody), and the CSRF token for the next POST."""
    who = current_session()
    body: dict[str, Any] = {"signed_in": who is not None, "csrf_token": generate_csrf()}
    if who is not None:
        body.update(wallet=who.wallet, participant=who.participant, role=who.role,
                    expires_at=who.expires_at)
    return jsonify(body)


@auth.post("/api/auth/challenge")
def challenge() -> Response:
    """A fresh EIP-4361 message for ``address`` to sign, naming the configured domain (the
    page compares it with its own address before asking the wallet)."""
    address = json_object().get("address")
    if not isinstance(address, str) or not Web3.is_address(address):
        raise BadRequest("address must be the wallet's 0x address.")
    address = Web3.to_checksum_address(address)
    settings, store = services().settings, services().store
    now = datetime.now(UTC).replace(microsecond=0)
    nonce = store.new_nonce()
    text = SiweMessage(
        domain=settings.sign_in_domain, address=address, statement=STATEMENT,
        uri=settings.sign_in_uri, version="1", chain_id=settings.index.chain.chain_id,
        nonce=nonce, issued_at=now,
        expiration_time=now + timedelta(minutes=settings.nonce_minutes)).text()
    store.issue(nonce, address, client_key(), text)
    return jsonify({"message": text, "domain": settings.sign_in_domain,
                    "uri": settings.sign_in_uri})


# The reason label of a refused sign-in (pilotchain_portal_sign_ins_refused_total), most
# specific first.
REFUSALS: tuple[tuple[type[PortalError], str], ...] = (
    (BadRequest, "bad_request"),
    (MalformedMessage, "malformed_message"),
    (NonceRefused, "nonce_refused"),
    (SignInRefused, "signature_refused"),
    (NotRegistered, "not_registered"),
    (LedgerUnavailable, "chain_unavailable"),
)


@auth.post("/api/auth/verify")
def sign_in() -> Response:
    """Check the signed message and open a session for its wallet; counted either way."""
    metrics = services().metrics
    try:
        answer = open_session()
    except PortalError as error:
        metrics.sign_in_refused(next((reason for kind, reason in REFUSALS
                                      if isinstance(error, kind)), "other"))
        raise
    metrics.sign_ins.inc()
    return answer


def open_session() -> Response:
    body = json_object()
    text, signature = body.get("message"), body.get("signature")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise BadRequest("Send the signed message as message and the signature as signature.")
    settings = services().settings
    session.pop(SESSION_KEY, None)
    # The nonce is used up by any attempt that names it, even one refused below: a message
    # is good for one try only, and only exactly as it was issued.
    named = parse_message(text)
    services().store.consume_nonce(named.nonce, named.address, text)
    message = verify(text, signature, Expected(settings.sign_in_domain,
                                               settings.index.chain.chain_id,
                                               datetime.now(UTC)))
    identity = services().ledger.identity(message.address)
    if identity.participant is None and not identity.is_operator:
        network = settings.index.chain.network_name
        if settings.operator_contact:
            raise NotRegistered(
                "The wallet {wallet} is not registered to a participant of {network}; ask "
                "{contact} to register it.", wallet=message.address, network=network,
                contact=settings.operator_contact)
        # A sentence of its own: German says "the grid operator" differently here and on
        # the page ("den" / "vom Netzbetreiber"), so it cannot be one value filled in.
        raise NotRegistered(
            "The wallet {wallet} is not registered to a participant of {network}; ask the "
            "grid operator to register it.", wallet=message.address, network=network)
    role: Role = "operator" if identity.is_operator else "participant"
    opened = services().store.open_session(message.address, identity.participant, role)
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = opened.id
    return jsonify({"wallet": opened.wallet, "participant": opened.participant,
                    "role": opened.role, "csrf_token": generate_csrf()})


@auth.post("/api/auth/signout")
def sign_out() -> Response:
    who = current_session()
    if who is not None:
        services().store.close_session(who.id)
    session.clear()
    return jsonify({"signed_in": False})
