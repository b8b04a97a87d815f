"""The JSON API: ``POST /api/claim``, ``GET /api/info`` and the earlier BC4P pilot's
``POST /api/add_key`` (``public_key`` as JSON or as a form field).

Every answer is JSON; errors are ``{"error": "<sentence>"}`` with the right status.
Cross-origin requests are allowed only from FAUCET_CORS_ORIGINS.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from faucet.claims import Claim, FaucetInfo
from faucet.errors import InvalidRequest
from faucet.http import add_network_params, client_ip, services

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
NOT_JSON = ('Send the claim as JSON with the header "Content-Type: application/json", '
            'for example {"address": "0x..."}.')
BROKEN_JSON = 'The request body is not valid JSON; send for example {"address": "0x..."}.'
NOT_OBJECT = 'The JSON body must be an object such as {"address": "0x..."}.'
TOO_DEEP = 'The JSON body is nested too deeply; send only {"address": "0x..."}.'
NO_ADDRESS = 'The JSON body has no "address" field; send for example {"address": "0x..."}.'
ADD_KEY_TYPE = ('Send the wallet address as "public_key", either as JSON '
                '(Content-Type: application/json) or as a form field.')
NO_PUBLIC_KEY = 'The request has no "public_key" field holding the wallet address.'

api = Blueprint("api", __name__)


@api.post("/api/claim")
def claim() -> Response:
    """Send the configured amount to ``{"address": ...}``."""
    body = json_object()
    if "address" not in body:
        raise InvalidRequest(NO_ADDRESS)
    return claim_response(body["address"])


@api.post("/api/add_key")
def add_key() -> Response:
    """The earlier pilot's claim endpoint, kept for its clients: same answers as /api/claim."""
    if request.is_json:
        fields: Any = json_object()
    elif request.mimetype in FORM_TYPES:
        fields = request.form
    else:
        raise InvalidRequest(ADD_KEY_TYPE)
    if "public_key" not in fields:
        raise InvalidRequest(NO_PUBLIC_KEY)
    return claim_response(fields["public_key"])


@api.get("/api/info")
def info() -> Response:
    """The network, the faucet's balance and its terms."""
    return jsonify(info_json(services().claims.info()))


@api.after_request
def allow_configured_origins(response: Response) -> Response:
    """CORS for the API only, and only for FAUCET_CORS_ORIGINS ("*" allows any origin)."""
    response.vary.add("Origin")
    origin = request.headers.get("Origin", "").rstrip("/")
    allowed = services().settings.cors_origins
    if origin and (origin in allowed or "*" in allowed):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or InvalidRequest saying what is wrong with it.

    Reading the body enforces FAUCET_MAX_BODY_BYTES (werkzeug raises 413 beyond it).
    """
    if not request.is_json:
        raise InvalidRequest(NOT_JSON)
    try:
        value = json.loads(read_body())
    except ValueError:
        raise InvalidRequest(BROKEN_JSON) from None
    # [[[[...]]]]: with Python's default recursion limit a 2 kB body nests deeper than the
    # parser goes (py_ecc, imported with web3, raises the limit today; this stays a 400).
    except RecursionError:
        raise InvalidRequest(TOO_DEEP) from None
    if not isinstance(value, dict):
        raise InvalidRequest(NOT_OBJECT)
    return value


def read_body() -> bytes:
    """The request body, at most MAX_CONTENT_LENGTH bytes, else 413.

    werkzeug refuses a Content-Length over the limit, but silently cuts a chunked body at
    it; a body that reaches the limit is taken as too large rather than parsed cut short.
    """
    body = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and len(body) >= limit:
        raise RequestEntityTooLarge()
    return body


def claim_response(raw_address: object) -> Response:
    """Claim for ``raw_address`` from this client; FaucetErrors go to the app's handler."""
    result = services().claims.claim(raw_address, client_ip())
    return jsonify(claim_json(result))


def claim_json(result: Claim) -> dict[str, Any]:
    """A claim as JSON; wei as strings, which JavaScript cannot hold as numbers."""
    return {
        "message": result.message,
        "address": result.address,
        "amount": result.amount,
        "amount_wei": str(result.amount_wei),
        "symbol": result.symbol,
        "tx_hash": result.tx_hash,
        "tx_url": result.tx_url,
    }


def info_json(info: FaucetInfo) -> dict[str, Any]:
    """``GET /api/info``'s answer, with the parameters for ``wallet_addEthereumChain``."""
    return {
        "network_name": info.network_name,
        "chain_id": info.chain_id,
        "currency_symbol": info.symbol,
        "rpc_url": info.rpc_url,
        "explorer_url": info.explorer_url,
        "faucet_address": info.faucet_address,
        "balance": info.balance,
        "balance_wei": None if info.balance_wei is None else str(info.balance_wei),
        "amount": info.amount,
        "amount_wei": str(info.amount_wei),
        "address_limit": info.address_limit,
        "ip_limit": info.ip_limit,
        "wait_between_claims": info.wait,
        "add_network_params": add_network_params(info),
    }
