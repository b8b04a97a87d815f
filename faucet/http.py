"""What the page and the API share at the HTTP edge: the app's services, the client's IP
and the status code and JSON body for each FaucetError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, jsonify, request
from flask_wtf.csrf import CSRFProtect

from faucet.claims import ClaimService, FaucetInfo
from faucet.config import FaucetSettings
from faucet.errors import FaucetError, FaucetUnavailable, InvalidRequest, RateLimited

EXTENSION = "pilotchain-faucet"


@dataclass(frozen=True)
class Services:
    """What the blueprints need, stored on the app by ``create_app``."""

    settings: FaucetSettings
    claims: ClaimService
    csrf: CSRFProtect


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[EXTENSION]
    return found


def client_ip() -> str:
    """The client's IP: the peer, or X-Forwarded-For as far as FAUCET_TRUSTED_PROXIES allow
    (werkzeug's ProxyFix has already rewritten ``remote_addr``)."""
    return request.remote_addr or "unknown"


def status_for(error: FaucetError) -> int:
    """The HTTP status of a FaucetError: 400, 429 or 503 (500 for anything else)."""
    if isinstance(error, InvalidRequest):
        return 400
    if isinstance(error, RateLimited):
        return 429
    if isinstance(error, FaucetUnavailable):
        return 503
    return 500


def retry_headers(error: Exception) -> dict[str, str]:
    """``Retry-After`` for a RateLimited error, nothing for others."""
    return {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else {}


def error_json(error: FaucetError) -> tuple[Response, int, dict[str, str]]:
    """``{"error": sentence}`` (plus ``retry_after`` for 429) with its status and headers."""
    body: dict[str, Any] = {"error": str(error)}
    if isinstance(error, RateLimited):
        body["retry_after"] = error.retry_after
    return jsonify(body), status_for(error), retry_headers(error)


def sentence_json(sentence: str, status: int) -> tuple[Response, int]:
    """``{"error": sentence}`` with ``status``."""
    return jsonify({"error": sentence}), status


def add_network_params(info: FaucetInfo) -> dict[str, Any]:
    """The argument of MetaMask's ``wallet_addEthereumChain`` (EIP-3085) for this chain."""
    params: dict[str, Any] = {
        "chainId": hex(info.chain_id),
        "chainName": info.network_name,
        "rpcUrls": [info.rpc_url],
        "nativeCurrency": {"name": info.symbol, "symbol": info.symbol, "decimals": 18},
    }
    if info.explorer_url:
        params["blockExplorerUrls"] = [info.explorer_url]
    return params
