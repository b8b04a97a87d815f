"""The portal's HTTP interface described in OpenAPI 3.0, served at ``/openapi.json``.

Every route the app serves is here: sign-in, a participant's data and exports, the operator's
view and transactions, the page, its static files and the chart library, ``/health``.
``tests/test_portal_openapi.py`` holds the routes and this description equal and fuzzes the
API from it, signed in and not. The bounds are the app's own (``portal.web.api``).
"""

from __future__ import annotations

from typing import Any

from pilotchain.openapi import AMOUNT, RETRY_AFTER, answer, document, error, obj
from portal.web.api import CSV_EXPORTS, MAX_PAGE, MAX_PERIOD, TRANSACTIONS
from portal.web.config import MAX_PAGE_SIZE, WebSettings
from portal.web.i18n import LANGUAGES
from portal.web.pages import UPLOT_FILES

UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ID = {"type": "string", "pattern": f"^({UUID}|0x[0-9a-fA-F]{{64}})$",
      "description": "a gsy-e uuid, or 0x and the 64 hex digits of its bytes32"}
ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
TEXT = {"type": "string"}
NULLABLE_TEXT = {"type": "string", "nullable": True}
INTEGER = {"type": "integer"}
HTML = "text/html"

SESSION: list[dict[str, list[str]]] = [{"session": []}]
SESSION_AND_CSRF: list[dict[str, list[str]]] = [{"session": [], "csrf": []}]
COMPONENTS = {"securitySchemes": {
    "session": {"type": "apiKey", "in": "cookie", "name": "pilotchain_portal",
                "description": "the session cookie /api/auth/verify sets"},
    "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken",
             "description": "every POST: the token /api/me hands out, for the same cookie"},
}}

BILL = obj({"participant": TEXT, **{name: AMOUNT for name in (
    "energy_sold", "energy_bought", "money_receivable", "money_payable", "balancing_charges",
    "balancing_credits", "net")}})
TRADE = obj({
    "trade_id": TEXT, "market": TEXT, "time_slot": INTEGER, "slot_time": TEXT, "seller": TEXT,
    "buyer": TEXT, "seller_origin": TEXT, "buyer_origin": TEXT, "energy": AMOUNT,
    "price": AMOUNT, "fee": AMOUNT, "block_number": INTEGER, "log_index": INTEGER,
    "tx_hash": TEXT,
    "explorer_url": {"type": "string", "nullable": True,
                     "description": "the transaction in the explorer; null without "
                                    "EXPLORER_URL"},
})
PERIOD = obj({"period": INTEGER, "end_slot": INTEGER})
NAMES = {"type": "object", "additionalProperties": TEXT,
         "description": "names to show, by id: the participant's own, its counterparties' "
                        "on this page and its markets' (nobody else's)"}
TRADES = obj({
    "trades": {"type": "array", "items": TRADE}, "total": INTEGER, "page": INTEGER,
    "per_page": INTEGER, "markets": {"type": "array", "items": TEXT},
    "periods": {"type": "array", "items": PERIOD}, "names": NAMES,
})
BALANCING_LINE = obj({
    "slot": INTEGER, "slot_time": TEXT, "tx_hash": TEXT,
    "kind": {"type": "string", "enum": ["shortfall", "excess", "surplus"]},
    **{name: AMOUNT for name in ("traded", "measured", "deviation", "rate", "amount")}})
SUMMARY = obj({
    "participant": TEXT, "name": NULLABLE_TEXT,
    "period": {"type": "integer", "nullable": True, "description": "null: the open period"},
    "trades": INTEGER, "metered_slots": INTEGER, "unmetered_slots": INTEGER,
    "self_sufficiency": {"type": "integer", "nullable": True, "minimum": 0, "maximum": 10000,
                         "description": "the community's share of the energy drawn (bought "
                                        "from the community plus what the grid supplied "
                                        "beyond it), in basis points; null if none was drawn"},
    "meters": {"type": "array", "items": obj({
        "meter": TEXT, "participant": TEXT, "signer": TEXT, "home_area": TEXT,
        "active_from": INTEGER, "active_until": {"type": "integer", "nullable": True},
        "last_reading": obj({"time": INTEGER, "import_wh": INTEGER, "export_wh": INTEGER},
                            nullable=True)})},
    **{name: AMOUNT for name in (
        "bought", "paid", "sold", "received", "from_grid", "to_grid", "grid_value",
        "feed_in_value", "savings", "earned", "balancing_charges", "balancing_credits", "net",
        "grid_supply_rate", "feed_in_rate", "shortfall_rate")},
    "balancing": {"type": "array", "items": BALANCING_LINE},
    "periods": {"type": "array", "items": PERIOD},
})
LANG = {"type": "string", "description": f"one of {', '.join(LANGUAGES)}; any other value "
                                        "is ignored (the browser's language chooses)"}
NAME_ENTRY = obj({"name": NULLABLE_TEXT, "gsy_name": NULLABLE_TEXT,
                  "display_name": NULLABLE_TEXT})
NULLABLE_AMOUNT = {**AMOUNT, "nullable": True}
SLOT = obj({
    "participant": TEXT, "slot": INTEGER, "slot_time": TEXT,
    "status": {"type": "string", "enum": ["balanced", "unmetered"]},
    "meter": NULLABLE_TEXT, "import_energy": NULLABLE_AMOUNT, "export_energy": NULLABLE_AMOUNT,
    "sold": AMOUNT, "bought": AMOUNT, "shortfall_charge": NULLABLE_AMOUNT,
    "excess_charge": NULLABLE_AMOUNT, "surplus_credit": NULLABLE_AMOUNT, "tx_hash": TEXT,
}, required=["slot", "slot_time", "status", "sold", "bought"])
STATEMENT = obj({"period": INTEGER, "end_slot": INTEGER, "paid": {"type": "boolean"},
                 **{name: AMOUNT for name in (
                     "energy_sold", "energy_bought", "money_receivable", "money_payable",
                     "balancing_charges", "balancing_credits", "net")}})
ME = obj({"signed_in": {"type": "boolean"}, "csrf_token": TEXT, "wallet": TEXT,
          "participant": NULLABLE_TEXT, "role": {"type": "string",
                                                 "enum": ["participant", "operator"]},
          "expires_at": INTEGER}, required=["signed_in", "csrf_token"])
SIGNED_IN = obj({"wallet": TEXT, "participant": NULLABLE_TEXT,
                 "role": {"type": "string", "enum": ["participant", "operator"]},
                 "csrf_token": TEXT})
CHALLENGE = obj({"message": TEXT, "domain": TEXT, "uri": TEXT})
OPEN_PERIOD_BILL = obj({name: AMOUNT for name in (
    "energy_sold", "energy_bought", "money_receivable", "money_payable", "balancing_charges",
    "balancing_credits", "net")})
OPEN_PERIOD_BILL["description"] = (
    "the participant's bill of the open billing period so far, as its statement will read "
    "once the period is closed (statementOf): net = money_receivable + balancing_credits - "
    "money_payable - balancing_charges, positive when the participant is owed")
REGISTRATION = obj({"participant": TEXT, "wallet": ADDRESS, "block_number": INTEGER,
                    "tx_hash": TEXT, "open_period": OPEN_PERIOD_BILL})
OVERVIEW = obj({"participants": {"type": "array", "items": REGISTRATION},
                "meters": {"type": "array", "items": obj({
                    "meter": TEXT, "participant": TEXT, "signer": TEXT, "home_area": TEXT,
                    "active_from": INTEGER,
                    "active_until": {"type": "integer", "nullable": True},
                    "last_reading": obj({"time": INTEGER, "import_wh": INTEGER,
                                         "export_wh": INTEGER}, nullable=True),
                    "missing": {"type": "integer", "nullable": True,
                                "description": "slot boundaries passed since the newest "
                                               "reading (active meters; null if the chain "
                                               "cannot be asked)"}})},
                "totals": obj({"trades": INTEGER, "energy": AMOUNT, "price": AMOUNT}),
                "unmetered": {"type": "array", "items": {"type": "object"}},
                "community": {"type": "array", "description": (
                    "the community's energy in each of the newest 96 balanced slots, over "
                    "its metered participants (from_grid and to_grid each participant's own, "
                    "added up)"), "items": obj({
                        "slot": INTEGER, "slot_time": TEXT, "participants": INTEGER,
                        **{name: AMOUNT for name in ("imported", "exported", "bought",
                                                     "from_grid", "to_grid")}})},
                "periods": {"type": "array", "items": PERIOD},
                "names": {"type": "object", "additionalProperties": NAME_ENTRY}})
HEALTH = obj({
    "services": {"type": "array", "items": obj({"name": TEXT, "url": TEXT,
                                                "up": {"type": "boolean"}, "status": TEXT,
                                                "sentence": TEXT})},
    "dead_letters": obj({"streams": {"type": "array", "items": {"type": "object"}},
                         "error": NULLABLE_TEXT}),
})
TRANSACTION = obj({"to": ADDRESS, "data": {"type": "string", "pattern": "^0x[0-9a-f]*$"},
                   "chainId": {"type": "string", "pattern": "^0x[0-9a-f]+$"}})
# What an operator transaction's body may hold (each kind needs some of them).
TRANSACTION_FIELDS = obj({name: TEXT for name in (
    "participant", "wallet", "meter", "signer", "home_area", "at", "end_slot")}, required=[])

NOT_SIGNED_IN = error("nobody is signed in (or the sign-in has ended)")
STALE = error("the CSRF token is missing or stale, or the body is wrong")


def participant_answers(ok: dict[str, Any], *, live: bool) -> dict[str, Any]:
    """A participant route's answers: its own, the operator's, nobody else's."""
    found = {"200": ok, "400": error("the id or a parameter is wrong"),
             "401": NOT_SIGNED_IN,
             "403": error("another participant's data: only one's own, or the operator")}
    if live:
        found["503"] = error("the chain cannot be asked right now")
    return found


def trade_parameters(page_size: int) -> list[dict[str, Any]]:
    return [
        {"name": "page", "in": "query", "schema": {
            "type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}},
        {"name": "per_page", "in": "query", "schema": {
            "type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": page_size}},
        {"name": "market", "in": "query", "schema": ID},
        {"name": "period", "in": "query", "schema": {
            "type": "string", "pattern": f"^(open|[1-9][0-9]{{0,{len(str(MAX_PERIOD)) - 1}}})$",
            "description": "a closed billing period's number (at most "
                           f"{MAX_PERIOD:,}), or open"}},
    ]


def participant_path(ok: dict[str, Any], summary: str, *, live: bool,
                     parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "security": SESSION,
        "parameters": [{"name": "participant", "in": "path", "required": True,
                        "schema": ID}, *(parameters or [])],
        "responses": participant_answers(ok, live=live),
    }
    return {"get": operation}


def json_post(summary: str, body: dict[str, Any] | None, responses: dict[str, Any], *,
              parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A POST with a JSON body (None: the body is not read)."""
    operation: dict[str, Any] = {
        "summary": summary, "security": SESSION_AND_CSRF,
        "responses": {**responses, "413": error("the body is larger than "
                                                "PORTAL_MAX_BODY_BYTES")},
    }
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    if parameters:
        operation["parameters"] = parameters
    return {"post": operation}


def description(settings: WebSettings) -> dict[str, Any]:
    """The OpenAPI description of this portal."""
    page_size = settings.page_size
    csv_kinds = sorted(CSV_EXPORTS)
    paths: dict[str, Any] = {
        "/api/me": {"get": {"summary": "Who is signed in, and the CSRF token",
                            "responses": {"200": answer("who is signed in", ME)}}},
        "/api/auth/challenge": json_post(
            "The EIP-4361 message for a wallet to sign", obj({"address": ADDRESS}),
            {"200": answer("the message, naming PORTAL_DOMAIN", CHALLENGE), "400": STALE,
             "429": error("too many messages wait for this client's signatures",
                          headers=RETRY_AFTER)}),
        "/api/auth/verify": json_post(
            "Sign in with the signed message", obj({"message": TEXT, "signature": TEXT}),
            {"200": answer("signed in", SIGNED_IN), "400": STALE,
             "401": error("the message or signature is refused; the sentence says why"),
             "403": error("the wallet is registered to no participant"),
             "503": error("the chain cannot be asked right now")}),
        "/api/auth/signout": json_post(
            "End the session", None,
            {"200": answer("signed out", obj({"signed_in": {"type": "boolean"}})),
             "400": STALE}),
        "/api/participants/{participant}/bill": participant_path(
            answer("the running bill, live from the contract", BILL), "The bill", live=True),
        "/api/participants/{participant}/trades": participant_path(
            answer("one page of trades", TRADES), "The trades, paged and filtered",
            live=False, parameters=trade_parameters(page_size)),
        "/api/participants/{participant}/summary": participant_path(
            answer("the period at a glance", SUMMARY),
            "The billing period at a glance: bought, sold, savings, balancing, net",
            live=False, parameters=[p for p in trade_parameters(page_size)
                                    if p["name"] == "period"]),
        "/api/participants/{participant}/slots": participant_path(
            answer("each closed slot", obj({"slots": {"type": "array", "items": SLOT}})),
            "The closed slots", live=False),
        "/api/participants/{participant}/statements": participant_path(
            answer("each closed period's statement",
                   obj({"statements": {"type": "array", "items": STATEMENT}})),
            "The statements, live from the contract", live=True),
        "/api/participants/{participant}/statements/{period}.pdf": {"get": {
            "summary": "A closed period's statement as a PDF document",
            "security": SESSION,
            "parameters": [
                {"name": "participant", "in": "path", "required": True, "schema": ID},
                {"name": "period", "in": "path", "required": True, "schema": {
                    "type": "integer", "minimum": 1, "maximum": MAX_PERIOD}},
                {"name": "lang", "in": "query", "schema": LANG},
            ],
            "responses": participant_answers(
                {"description": "the statement", "content": {
                    "application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
                live=True),
        }},
        "/api/participants/{participant}/{kind}.csv": {"get": {
            "summary": "A CSV export (trades with the filters of the trades route, all pages)",
            "security": SESSION,
            "parameters": [
                {"name": "participant", "in": "path", "required": True, "schema": ID},
                {"name": "kind", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": csv_kinds}},
                *(p for p in trade_parameters(page_size) if p["name"] in ("market", "period")),
            ],
            "responses": participant_answers(
                answer("the CSV file", TEXT, media_type="text/csv"), live=True),
        }},
        "/api/operator/overview": {"get": {
            "summary": "Participants with their bill of the open period, meters, totals, "
                       "the community's energy per slot and unmetered slots",
            "security": SESSION,
            "responses": {"200": answer("the overview", OVERVIEW), "401": NOT_SIGNED_IN,
                          "403": error("only the grid operator")}}},
        "/api/operator/health": {"get": {
            "summary": "The services' health and the dead-lettered entries (always 200)",
            "security": SESSION,
            "responses": {"200": answer("each service and stream", HEALTH),
                          "401": NOT_SIGNED_IN, "403": error("only the grid operator")}}},
        "/api/operator/transactions/{action}": json_post(
            "A transaction for the operator's wallet to sign, checked against the contract",
            TRANSACTION_FIELDS,
            {"200": answer("the transaction to sign", TRANSACTION),
             "400": error("a field is wrong, or the contract would refuse it"),
             "401": NOT_SIGNED_IN, "403": error("only the grid operator"),
             "503": error("the chain cannot be asked right now")},
            parameters=[{"name": "action", "in": "path", "required": True,
                         "schema": {"type": "string", "enum": sorted(TRANSACTIONS)}}]),
        "/api/operator/names": json_post(
            "The operator's name for a participant or market (an empty name clears it)",
            obj({"id": ID, "name": NULLABLE_TEXT}, required=["id"]),
            {"200": answer("the id and its names", obj({"id": TEXT, **NAME_ENTRY[
                "properties"]})),
             "400": error("the id or the name is wrong"), "401": NOT_SIGNED_IN,
             "403": error("only the grid operator")}),
        "/": {"get": {"summary": "The portal's page, in English or German (lang, else the "
                                 "switch's cookie, else Accept-Language)",
                      "parameters": [{"name": "lang", "in": "query", "schema": LANG}],
                      "responses": {"200": answer("the page", TEXT, media_type=HTML)}}},
        "/health": {"get": {"summary": "200 once serving",
                            "responses": {"200": answer("serving", obj({"status": TEXT}))}}},
        "/vendor/uplot/{name}": {"get": {
            "summary": "The chart library, served from node_modules (no CDN)",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": sorted(UPLOT_FILES)}}],
            "responses": {"200": {"description": "the file", "content": {
                "text/javascript": {"schema": TEXT}, "text/css": {"schema": TEXT}}},
                "404": answer("not installed (npm ci)", TEXT, media_type=HTML)}}},
        "/static/{filename}": {"get": {
            "summary": "The page's stylesheet and script",
            "parameters": [{"name": "filename", "in": "path", "required": True,
                            "schema": TEXT}],
            "responses": {"200": {"description": "the file", "content": {
                "text/javascript": {"schema": TEXT}, "text/css": {"schema": TEXT}}},
                "404": answer("no such file", TEXT, media_type=HTML)}}},
        "/style/{filename}": {"get": {
            "summary": "The stylesheet every PilotChain page shares (pilotchain.css)",
            "parameters": [{"name": "filename", "in": "path", "required": True,
                            "schema": TEXT}],
            "responses": {"200": {"description": "the file", "content": {
                "text/css": {"schema": TEXT}}},
                "404": answer("no such file", TEXT, media_type=HTML)}}},
        "/openapi.json": {"get": {
            "summary": "This description",
            "responses": {"200": answer("the OpenAPI description", {"type": "object"})}}},
    }
    return document(
        f"{settings.index.chain.network_name} participant portal",
        "Sign in with the wallet (EIP-4361); each participant sees its own bill, trades, "
        "slots and statements, the grid operator everyone's. Errors are "
        '{"error": "<a sentence>"}, in English or German as the page (the lang query '
        "parameter, else the pilotchain_lang cookie, else Accept-Language, else English); "
        "amounts are the contract's integers as decimal strings. See docs/portal.md.", paths,
        COMPONENTS)
