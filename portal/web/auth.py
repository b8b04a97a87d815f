"""Sign-in with the wallet (EIP-4361), who is signed in, and sign-out.

1. ``POST /api/auth/challenge`` with ``{"address"}``: the server issues a single-use nonce
   bound to that wallet and answers the message for the wallet to sign.
2. ``POST /api/auth/verify`` with ``{"message", "signature"}``: the message is parsed
   strictly and checked (domain, URI, chain id, times, signer), its nonce used up, and the
   wallet looked up on the contract: a participant's wallet or the contract's admin (the grid
   operator) gets a session; any failure leaves nobody signed in.
3. ``POST /api/auth/signout`` ends the session (server-side, so a copied cookie dies too).

Every POST carries the CSRF token (``X-CSRFToken``) that ``GET /api/me`` hands out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request, session
from flask_wtf.csrf import generate_csrf
from web3 import Web3

from portal.siwe import Expected, SiweMessage, parse_message, verify
from portal.web.http import (
    SESSION_KEY,
    BadRequest,
    NotRegistered,
    current_session,
    services,
)
from portal.web.store import Role

STATEMENT = "Sign in to the PilotChain participant portal."

auth = Blueprint("auth", __name__)


def domain() -> str:
    """The domain sign-in messages must name: PORTAL_DOMAIN, else the Host the browser used."""
    return services().settings.domain or request.host.lower()


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
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
    """A fresh EIP-4361 message for ``address`` to sign."""
    address = json_body().get("address")
    if not isinstance(address, str) or not Web3.is_address(address):
        raise BadRequest("address must be the wallet's 0x address.")
    address = Web3.to_checksum_address(address)
    settings = services().settings
    now = datetime.now(UTC).replace(microsecond=0)
    message = SiweMessage(
        domain=domain(), address=address, statement=STATEMENT,
        uri=f"{request.scheme}://{domain()}/", version="1",
        chain_id=settings.index.chain.chain_id, nonce=services().store.issue_nonce(address),
        issued_at=now, expiration_time=now + timedelta(minutes=settings.nonce_minutes))
    return jsonify({"message": message.text()})


@auth.post("/api/auth/verify")
def sign_in() -> Response:
    """Check the signed message and open a session for its wallet."""
    body = json_body()
    text, signature = body.get("message"), body.get("signature")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise BadRequest("Send the signed message as message and the signature as signature.")
    settings = services().settings
    session.pop(SESSION_KEY, None)
    # The nonce is used up by any attempt that names it, even one refused below: a message
    # is good for one try only.
    named = parse_message(text)
    services().store.consume_nonce(named.nonce, named.address)
    message = verify(text, signature, Expected(domain(), settings.index.chain.chain_id,
                                               datetime.now(UTC)))
    identity = services().ledger.identity(message.address)
    if identity.participant is None and not identity.is_operator:
        raise NotRegistered(
            f"The wallet {message.address} is not registered to a participant of "
            f"{settings.index.chain.network_name}; ask {settings.operator_contact} to "
            "register it.")
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
