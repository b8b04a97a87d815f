"""The faucet's HTTP interface described in OpenAPI 3.0, served at ``/openapi.json``.

Every route the app serves is here, under each path it is served at (the root and
FAUCET_PATH_PREFIX): the JSON API, the earlier pilot's ``add_key``, the page and its static
files. ``tests/test_faucet_openapi.py`` holds the routes and this description equal and fuzzes
the API from it.
"""

from __future__ import annotations

from typing import Any

from faucet.config import FaucetSettings
from pilotchain.openapi import AMOUNT, RETRY_AFTER, answer, document, error, json_content, obj

ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$",
           "description": "a wallet address: 0x and 40 hex digits, mixed case only with a "
                          "valid EIP-55 checksum",
           "example": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}
CLAIM = obj({
    "message": {"type": "string"}, "address": {"type": "string"},
    "amount": {"type": "string"}, "amount_wei": AMOUNT, "symbol": {"type": "string"},
    "tx_hash": {"type": "string", "pattern": "^0x[0-9a-f]{64}$"},
    "tx_url": {"type": "string", "nullable": True,
               "description": "the transaction in the explorer; null without EXPLORER_URL"},
})
NETWORK = obj({
    "chainId": {"type": "string"}, "chainName": {"type": "string"},
    "rpcUrls": {"type": "array", "items": {"type": "string"}},
    "nativeCurrency": obj({"name": {"type": "string"}, "symbol": {"type": "string"},
                           "decimals": {"type": "integer"}}),
    "blockExplorerUrls": {"type": "array", "items": {"type": "string"}},
}, required=["chainId", "chainName", "rpcUrls", "nativeCurrency"])
INFO = obj({
    "network_name": {"type": "string"}, "chain_id": {"type": "integer"},
    "currency_symbol": {"type": "string"}, "rpc_url": {"type": "string"},
    "explorer_url": {"type": "string", "nullable": True},
    "faucet_address": {"type": "string"},
    "balance": {"type": "string", "nullable": True},
    "balance_wei": {**AMOUNT, "nullable": True},
    "amount": {"type": "string"}, "amount_wei": AMOUNT,
    "address_limit": {"type": "string"}, "ip_limit": {"type": "string"},
    "wait_between_claims": {"type": "string"},
    "add_network_params": NETWORK,
})
HTML = "text/html"
PAGE = {"type": "string", "description": "the page (HTML)"}

# What a claim can answer, from the API or the earlier pilot's endpoint.
CLAIM_ANSWERS = {
    "200": answer("sent: the node accepted the transaction", CLAIM),
    "400": error("the address or the request is wrong; nothing was sent"),
    "413": error("the body is larger than FAUCET_MAX_BODY_BYTES"),
    "429": error("the address's or the client's quota is used up", headers=RETRY_AFTER),
    "503": error("the faucet cannot send right now (chain, Redis, funds); nothing was sent"),
}


def api_paths(prefix: str) -> dict[str, Any]:
    """The JSON API under ``prefix`` ("" or FAUCET_PATH_PREFIX)."""
    return {
        f"{prefix}/api/claim": {"post": {
            "summary": "Send FAUCET_AMOUNT to a wallet",
            "operationId": f"claim{prefix.replace('/', '_')}",
            "requestBody": {"required": True, "content": json_content(
                obj({"address": ADDRESS}))},
            "responses": CLAIM_ANSWERS,
        }},
        f"{prefix}/api/add_key": {"post": {
            "summary": "The earlier BC4P pilot's claim: public_key as JSON or a form field",
            "operationId": f"add_key{prefix.replace('/', '_')}",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": obj({"public_key": ADDRESS})},
                "application/x-www-form-urlencoded": {"schema": obj({"public_key": ADDRESS})},
            }},
            "responses": CLAIM_ANSWERS,
        }},
        f"{prefix}/api/info": {"get": {
            "summary": "The network, the faucet's balance and its terms",
            "operationId": f"info{prefix.replace('/', '_')}",
            "responses": {"200": answer("the network and the terms", INFO),
                          "503": error("the chain cannot be reached")},
        }},
    }


def page_paths(prefix: str) -> dict[str, Any]:
    """The page (a plain form that works without JavaScript) and its static files."""
    page = f"{prefix}/" if prefix else "/"
    suffix = prefix.replace("/", "_")
    return {
        page: {
            "get": {"summary": "The faucet's page", "operationId": f"page{suffix}",
                    "responses": {"200": answer("the page", PAGE, media_type=HTML)}},
            "post": {
                "summary": "The page's form: claim, and show the outcome on the page",
                "operationId": f"page_claim{suffix}",
                "requestBody": {"required": True, "content": {
                    "application/x-www-form-urlencoded": {"schema": obj(
                        {"address": ADDRESS, "csrf_token": {"type": "string"}},
                        required=[])}}},
                "responses": {
                    "200": answer("sent; the page shows the transaction", PAGE,
                                  media_type=HTML),
                    "400": answer("the form was stale or the address wrong; the page says "
                                  "which", PAGE, media_type=HTML),
                    "413": answer("the body is larger than FAUCET_MAX_BODY_BYTES", PAGE,
                                  media_type=HTML),
                    "429": answer("a quota is used up; the page says until when", PAGE,
                                  media_type=HTML, headers=RETRY_AFTER),
                    "503": answer("the faucet cannot send right now; the page says why", PAGE,
                                  media_type=HTML),
                }},
        },
        f"{prefix}/static/{{filename}}": {"get": {
            "summary": "The page's stylesheet and script",
            "operationId": f"static{suffix}",
            "parameters": [{"name": "filename", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the file",
                                  "content": {"text/css": {"schema": {"type": "string"}},
                                              "text/javascript": {"schema": {"type": "string"}}}},
                          "404": answer("no such file", PAGE, media_type=HTML)},
        }},
        f"{prefix}/style/{{filename}}": {"get": {
            "summary": "The stylesheet every PilotChain page shares (pilotchain.css)",
            "operationId": f"style{suffix}",
            "parameters": [{"name": "filename", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the file",
                                  "content": {"text/css": {"schema": {"type": "string"}}}},
                          "404": answer("no such file", PAGE, media_type=HTML)},
        }},
    }


def description(settings: FaucetSettings) -> dict[str, Any]:
    """The OpenAPI description of this faucet, with its configured path prefix."""
    paths: dict[str, Any] = {}
    for prefix in settings.prefixes:
        paths.update(api_paths(prefix))
        paths.update(page_paths(prefix))
    paths["/openapi.json"] = {"get": {
        "summary": "This description", "operationId": "openapi",
        "responses": {"200": answer("the OpenAPI description", {"type": "object"})}}}
    return document(
        f"{settings.chain.network_name} faucet",
        "Test funds for any wallet, within per-address and per-IP limits. Errors are "
        '{"error": "<a sentence>"}; amounts in wei are decimal strings. See docs/faucet.md.',
        paths)
