"""The participant's and the operator's JSON API and CSV exports.

Pages and exports share these functions, so a CSV holds exactly what the page shows. Amounts
are the contract's integers (energy kWh * 10**18, money euro cents * 10**18), sent as
decimal strings because they exceed what JavaScript numbers hold exactly; the CSV files add
them in kWh and cents, computed exactly. Privacy: a participant's session reaches only its
own participant's routes (403 otherwise); the operator's reaches every one.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request

from pilotchain.errors import Phrase
from pilotchain.operator import (
    AdminCall,
    close_period_call,
    deactivate_meter_call,
    register_meter_call,
    register_participant_call,
    unregister_participant_call,
)
from pilotchain.operator_input import (
    InvalidInput,
    parse_address,
    parse_area,
    parse_meter,
    parse_participant,
    parse_time,
)
from portal import queries, summary
from portal.db import Database
from portal.names import MAX_NAME_CHARS, clean_name, names_of, set_display_name, shown_names
from portal.schema import PARTICIPANT_SUMS
from portal.statement import StatementDocument, render
from portal.web.config import MAX_PAGE_SIZE
from portal.web.http import BadRequest, canonical_id, json_body, may_see, operator, services
from portal.web.i18n import chosen_language
from portal.web.ledger import BadParticipantId, LedgerUnavailable
from portal.web.operations import health

T = TypeVar("T")

SCALE = 18
CSV_CHUNK_ROWS = 1000
AMOUNTS = frozenset({
    "energy", "price", "fee", "import_energy", "export_energy", "sold", "bought",
    "shortfall_charge", "excess_charge", "surplus_credit", "energy_sold", "energy_bought",
    "money_receivable", "money_payable", "balancing_charges", "balancing_credits", "net",
    "received", "from_grid", "to_grid", "grid_value", "feed_in_value", "savings",
    "earned", "grid_supply_rate", "feed_in_rate", "shortfall_rate", "traded", "measured",
    "deviation", "rate", "amount", "imported", "exported"})
ENERGY = frozenset({"energy", "import_energy", "export_energy", "sold", "bought",
                    "energy_sold", "energy_bought"})

api = Blueprint("api", __name__)


def db() -> Database:
    return services().store.db


def shown(row: dict[str, Any]) -> dict[str, Any]:
    """A row for JSON: amounts as decimal strings."""
    return {k: str(v) if k in AMOUNTS and v is not None else v for k, v in row.items()}


def units(value: int) -> str:
    """A scaled integer in whole units (kWh or cents), exactly: the decimal point moved in
    its digits (a CSV of 10,000 trades converts 30,000 amounts)."""
    digits = str(abs(value)).rjust(SCALE + 1, "0")
    whole, fraction = digits[:-SCALE], digits[-SCALE:].rstrip("0")
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"


@lru_cache(maxsize=4096)
def slot_time(slot: int) -> str:
    """A slot's start as ISO 8601 UTC (cached: a participant's trades share few slots, and
    strftime costs more than the rest of a CSV row)."""
    return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def explorer_base() -> str | None:
    """Where a transaction's page is, ``<EXPLORER_URL>/tx/``; None without an explorer (the
    native stack has none), so that no page links to nothing."""
    url = services().settings.index.chain.explorer_url.strip().rstrip("/")
    return f"{url}/tx/" if url else None


# Bounds of the query's numbers: far beyond any pilot (a billion trades a participant, a
# billion periods), and far inside what the databases' 64-bit integers hold, so no number a
# client sends reaches a query it overflows.
MAX_PAGE = 10**9 // MAX_PAGE_SIZE
MAX_PERIOD = 10**9
_DIGITS = re.compile(r"[0-9]{1,10}")
MAX_FILTER_CHARS = 80


def int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    """The query parameter ``name`` as a whole number in [low, high], ``default`` if absent;
    anything else a 400 with a sentence. ASCII digits only: ``str.isdigit`` also takes "²"
    and "٣", which ``int`` then refuses or reads."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequest("{name} must be a whole number between {low} and {high}, not "
                         "{raw!r}.", name=name, low=low, high=high,
                         raw=raw[:MAX_FILTER_CHARS])
    return int(raw)


def csv_response(name: str, columns: Sequence[str], rows: list[dict[str, Any]]) -> Response:
    """``rows`` as CSV: every column as stored, plus each amount in kWh or cents. Sent in
    chunks as it is written (10,000 trades are ~4 MB): the first bytes leave at once and
    the whole file is never held twice."""
    amounts = [c for c in columns if c in AMOUNTS]
    header = [*columns, *(f"{c}_{'kwh' if c in ENERGY else 'cents'}" for c in amounts)]

    def chunks() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for start in range(0, max(len(rows), 1), CSV_CHUNK_ROWS):
            # csv writes None as an empty cell; so do the unit columns (an unmetered slot's).
            writer.writerows([row[c] for c in columns]
                             + [None if row[c] is None else units(int(row[c])) for c in amounts]
                             for row in rows[start:start + CSV_CHUNK_ROWS])
            yield out.getvalue()
            out.seek(0)
            out.truncate()

    return Response(chunks(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{name}.csv"'})


# --- one participant ----------------------------------------------------------------------


def market_arg() -> str | None:
    """The ``market`` filter: a market id (a gsy-e uuid, or 0x and 64 hex digits) in the
    form the index keeps, or None."""
    raw = request.args.get("market", "").strip()
    if not raw:
        return None
    try:
        return canonical_id(raw)
    except BadParticipantId:
        raise BadRequest("market must be a market id (a gsy-e uuid, or 0x and 64 "
                         "hexadecimal digits), not {raw!r}.", raw=raw[:MAX_FILTER_CHARS]
                         ) from None


def trade_filters() -> dict[str, Any]:
    period_raw = request.args.get("period", "").strip()
    filters: dict[str, Any] = {"market": market_arg(), "period": None,
                               "open_period": period_raw == "open"}
    if period_raw and period_raw != "open":
        filters["period"] = int_arg("period", None, 1, MAX_PERIOD)
    return filters


def trades_page(participant: str, *, everything: bool = False) -> queries.TradePage:
    filters = trade_filters()
    per_page = int_arg("per_page", services().settings.page_size, 1, MAX_PAGE_SIZE) or 1
    page = int_arg("page", 1, 1, MAX_PAGE) or 1
    if everything:
        page, per_page = 1, 10**9
    try:
        return queries.trades_of(db(), participant, page=page, per_page=per_page, **filters)
    except LookupError:
        raise BadRequest("There is no closed billing period {period}.",
                         period=filters["period"]) from None


def tx_url(tx_hash: str) -> str | None:
    """The explorer's page of a transaction, None without an explorer."""
    explorer = explorer_base()
    return None if explorer is None else explorer + tx_hash


def trade_rows(found: queries.TradePage) -> list[dict[str, Any]]:
    explorer = explorer_base()
    return [{**row, "slot_time": slot_time(int(row["time_slot"])),
             "explorer_url": None if explorer is None else explorer + str(row["tx_hash"])}
            for row in found.rows]


def slot_rows(participant: str) -> list[dict[str, Any]]:
    rows = [{**row, "status": "balanced", "slot_time": slot_time(int(row["slot"]))}
            for row in queries.balanced_slots(db(), participant)]
    rows += [{**row, "status": "unmetered", "slot_time": slot_time(int(row["slot"])),
              "meter": None, "import_energy": None, "export_energy": None,
              "shortfall_charge": None, "excess_charge": None, "surplus_credit": None}
             for row in queries.unmetered_slots(db(), participant)]
    return sorted(rows, key=lambda row: int(row["slot"]))


TRADE_CSV = ("trade_id", "market", "time_slot", "slot_time", "seller", "buyer",
             "seller_origin", "buyer_origin", "energy", "price", "fee", "block_number",
             "log_index", "tx_hash", "explorer_url")
SLOT_CSV = ("slot", "slot_time", "status", "meter", "import_energy", "export_energy", "sold",
            "bought", "shortfall_charge", "excess_charge", "surplus_credit", "tx_hash")
STATEMENT_CSV = ("period", "end_slot", "energy_sold", "energy_bought", "money_receivable",
                 "money_payable", "balancing_charges", "balancing_credits", "net", "paid")
BILL_CSV = ("participant", "energy_sold", "energy_bought", "money_receivable",
            "money_payable", "balancing_charges", "balancing_credits", "net")


@api.get("/api/participants/<participant>/bill")
def bill(participant: str) -> Response:
    """The running bill, live from the contract."""
    participant = may_see(participant)
    return jsonify(shown({"participant": participant,
                          **services().ledger.bill(participant)}))


def fresh_names() -> None:
    """gsy-e's names that reached the trade stream since the last look (throttled)."""
    services().names.refresh(db())


@api.get("/api/participants/<participant>/trades")
def trades(participant: str) -> Response:
    """One page of the participant's trades (``page``, ``per_page``, ``market``,
    ``period``: a closed period's number or ``open``), the markets it traded in, and the
    names of the participant, of its counterparties on this page and of its markets (the
    privacy rule: nobody else's)."""
    participant = may_see(participant)
    found = trades_page(participant)
    markets = queries.markets_of(db(), participant)
    fresh_names()
    named = {participant, *markets, *(str(r[side]) for r in found.rows
                                      for side in ("seller", "buyer", "market"))}
    return jsonify({"trades": [shown(r) for r in trade_rows(found)], "total": found.total,
                    "page": found.page, "per_page": found.per_page,
                    "markets": markets, "periods": queries.periods(db()),
                    "names": shown_names(db(), named)})


def period_filters() -> dict[str, Any]:
    """``period``: a closed period's number, or ``open`` (also when absent)."""
    raw = request.args.get("period", "").strip()
    if not raw or raw == "open":
        return {"period": None, "open_period": True}
    return {"period": int_arg("period", None, 1, MAX_PERIOD), "open_period": False}


@api.get("/api/participants/<participant>/summary")
def month(participant: str) -> Response:
    """The billing period (``period``: a closed one's number, or ``open``) at a glance:
    bought from the community and from the grid, sold, prices against the operator's
    rates, balancing charges and credits slot by slot, the net (portal.summary)."""
    participant = may_see(participant)
    filters = period_filters()
    try:
        found = summary.month(db(), participant, **filters)
    except LookupError:
        raise BadRequest("There is no closed billing period {period}.",
                         period=filters["period"]) from None
    fresh_names()
    # "paid" is money here, a statement's flag elsewhere: not in AMOUNTS.
    return jsonify({**shown(found), "paid": str(found["paid"]), "balancing": [
        {**shown(line), "slot_time": slot_time(int(line["slot"]))}
        for line in found["balancing"]], "periods": queries.periods(db()),
        "name": shown_names(db(), [participant]).get(participant)})


@api.get("/api/participants/<participant>/slots")
def slots(participant: str) -> Response:
    """Each closed slot: traded and measured energy, and the balancing charged."""
    participant = may_see(participant)
    return jsonify({"slots": [shown(r) for r in slot_rows(participant)]})


@api.get("/api/participants/<participant>/statements")
def statements(participant: str) -> Response:
    """Every closed billing period's statement, live from the contract."""
    participant = may_see(participant)
    return jsonify({"statements": [shown(s) for s in
                                   services().ledger.statements(participant)]})


@api.get("/api/participants/<participant>/statements/<period>.pdf")
def statement_pdf(participant: str, period: str) -> Response:
    """A closed period's statement as a PDF document (``lang``: en or de, else the
    browser's language): the amounts of ``statementOf``, read live, the period's trades and
    balancing lines, and the chain reference to check it against."""
    participant = may_see(participant)
    if not _DIGITS.fullmatch(period) or not 1 <= int(period) <= MAX_PERIOD:
        raise BadRequest("The period must be a whole number between 1 and {most}, not "
                         "{period!r}.", most=MAX_PERIOD, period=period[:MAX_FILTER_CHARS])
    number = int(period)
    found = services().ledger.statements(participant)
    if number > len(found):
        raise BadRequest("There is no closed billing period {period}.", period=number)
    closes = db().fetch("SELECT period, end_slot, tx_hash, block_number FROM periods "
                        "ORDER BY period")
    close = next((row for row in closes if int(row[0]) == number), None)
    before = next((int(row[1]) for row in closes if int(row[0]) == number - 1), None)
    trades = queries.trades_of(db(), participant, period=number, page=1,
                               per_page=10**9).rows
    slots = queries.balanced_slots(db(), participant, period=number)
    fresh_names()
    names = shown_names(db(), {participant, *(str(t[side]) for t in trades
                                              for side in ("seller", "buyer", "market"))})
    chain = services().settings.index.chain
    document = StatementDocument(
        network=chain.network_name, contract=services().ledger.deployment.address,
        chain_id=services().ledger.deployment.chain_id, participant=participant,
        name=names.get(participant), period=number, start_slot=before,
        statement=found[number - 1], close_tx=None if close is None else str(close[2]),
        close_block=None if close is None else int(close[3]), trades=trades, names=names,
        balancing=summary.balancing_lines(slots, summary.rates_history(db())))
    return Response(render(document, chosen_language(), services().settings.pdf_fonts),
                    mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="statement-'
                             f'{number}-{participant}.pdf"'})


CSV_EXPORTS: dict[str, tuple[tuple[str, ...], Callable[[str], list[dict[str, Any]]]]] = {
    "trades": (TRADE_CSV, lambda p: trade_rows(trades_page(p, everything=True))),
    "slots": (SLOT_CSV, slot_rows),
    "statements": (STATEMENT_CSV, lambda p: services().ledger.statements(p)),
    "bill": (BILL_CSV, lambda p: [{"participant": p, **services().ledger.bill(p)}]),
}


@api.get("/api/participants/<participant>/<kind>.csv")
def export(participant: str, kind: str) -> Response:
    """``trades.csv`` (with the same filters as the page, every page), ``slots.csv``,
    ``statements.csv``, ``bill.csv``."""
    participant = may_see(participant)
    if kind not in CSV_EXPORTS:
        raise BadRequest("There is no {kind}.csv; try trades, slots, statements or bill.",
                         kind=kind[:MAX_FILTER_CHARS])
    columns, rows = CSV_EXPORTS[kind]
    return csv_response(f"{kind}-{participant}", columns, rows(participant))


# --- the grid operator --------------------------------------------------------------------


def meters_with_readings() -> list[dict[str, Any]]:
    """Every meter with its newest reading and, for an active one, how many slot boundaries
    have passed on the chain since (``missing``: the readings the slots closing now lack;
    None when the chain cannot be asked, the rest of the view still answers)."""
    newest = queries.last_readings(db())
    try:
        current, length = services().ledger.slot_clock()
    except LedgerUnavailable:
        current = length = 0
    found = []
    for meter in queries.meters(db()):
        last = newest.get(str(meter["meter"]))
        missing = None
        if length and meter["active_until"] is None:
            since = last["time"] if last else int(meter["active_from"])
            missing = max(0, (current - since) // length)
        found.append({**meter, "last_reading": last, "missing": missing})
    return found


# The operator's view of the community's energy: the newest day of 15-minute slots.
COMMUNITY_SLOTS = 96


NO_BILL = {column: 0 for column in (*PARTICIPANT_SUMS, "net")}


def participants_with_open_bills() -> list[dict[str, Any]]:
    """Each registered participant with its bill of the open billing period so far
    (``open_period``: what its statement will say, ``net`` positive when it is owed), from
    the running sums the indexer keeps: one row a participant, never its trades."""
    bills = queries.open_period_bills(db())
    return [{**row, "open_period": shown(bills.get(str(row["participant"]), NO_BILL))}
            for row in queries.registrations(db())]


@api.get("/api/operator/overview")
def overview() -> Response:
    """Every participant (with its bill of the open period) and meter, totals, unmetered
    slots waiting for attention, and every name (gsy-e's and the operator's)."""
    operator()
    fresh_names()
    known = [str(pid) for (pid,) in db().fetch("SELECT id FROM names")]
    return jsonify({
        "names": names_of(db(), known),
        "participants": participants_with_open_bills(),
        "meters": meters_with_readings(),
        "totals": shown(queries.totals(db())),
        "unmetered": [shown({**row, "slot_time": slot_time(int(row["slot"])),
                             "explorer_url": tx_url(str(row["tx_hash"]))})
                      for row in queries.unmetered_slots(db(), None)],
        "community": [shown({**row, "slot_time": slot_time(row["slot"])})
                      for row in queries.community_slots(db(), newest=COMMUNITY_SLOTS)],
        "periods": queries.periods(db()),
    })


def body_field(body: Any, name: str, *, required: bool = True) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if value is None and not required:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest("Send {name} in a JSON object.", name=name)
    return value.strip()


def parsed(parse: Callable[[str], T], body: Any, name: str) -> T:
    """``body[name]`` read by one of the operator commands' parsers; its sentence, as a
    400, if it has the wrong form."""
    try:
        return parse(body_field(body, name))
    except InvalidInput as error:
        raise BadRequest(error.phrase) from None


def meter_end(body: Any) -> int:
    """``at``: when the meter stops measuring (unix seconds or ISO-8601); unset, the start of
    the chain's current slot."""
    if not body_field(body, "at", required=False):
        return services().ledger.current_slot()
    return parsed(parse_time, body, "at")


def home_area(body: Any) -> bytes | None:
    """``home_area``, if sent: the participant's own area (a house's is its own id)."""
    if not body_field(body, "home_area", required=False):
        return None
    return parsed(parse_area, body, "home_area")


WALLET = Phrase("wallet")
SIGNER = Phrase("meter's signing address")

# What each operator transaction is, from the request's JSON body; the calls (and the
# parsers) are those of `pilotchain meters|periods ...`, so both send the same calldata.
TRANSACTIONS: dict[str, Callable[[Any], AdminCall]] = {
    "register": lambda body: register_participant_call(
        parsed(parse_participant, body, "participant"),
        parsed(lambda text: parse_address(text, WALLET), body, "wallet")),
    "unregister": lambda body: unregister_participant_call(
        parsed(parse_participant, body, "participant")),
    "close-period": lambda body: close_period_call(parsed(parse_time, body, "end_slot")),
    "register-meter": lambda body: register_meter_call(
        parsed(parse_meter, body, "meter"),
        parsed(lambda text: parse_address(text, SIGNER), body, "signer"),
        parsed(parse_participant, body, "participant"), home_area(body)),
    "deactivate-meter": lambda body: deactivate_meter_call(parsed(parse_meter, body, "meter"),
                                                           meter_end(body)),
}


@api.post("/api/operator/transactions/<action>")
def operator_transaction(action: str) -> Response:
    """The transaction (``to``, ``data``, ``chainId``) the operator's wallet is to sign:
    ``register`` (participant, wallet), ``unregister`` (participant), ``close-period``
    (end_slot), ``register-meter`` (meter, signer, participant, optional home_area),
    ``deactivate-meter`` (meter, optional at). It is checked against the contract first
    (an eth_call from the operator's wallet), so what the contract would refuse is refused
    here with a sentence. The portal only prepares it; it holds no key."""
    who = operator()
    if action not in TRANSACTIONS:
        raise BadRequest("There is no operator transaction {action!r}; try {actions}.",
                         action=action[:MAX_FILTER_CHARS], actions=", ".join(TRANSACTIONS))
    admin_call = TRANSACTIONS[action](json_body())
    return jsonify(services().ledger.prepare(admin_call, who.wallet))


@api.get("/api/operator/health")
def operator_health() -> Response:
    """The bridge's, the ingest's and the slot closer's own ``/health``, each up or down with
    a sentence; and what waits in the bridge's and the ingest's dead-letter streams."""
    operator()
    found = services()
    return jsonify({"services": health(found.settings.watched,
                                       found.settings.health_timeout),
                    "dead_letters": found.dead_letters.read()})


@api.post("/api/operator/names")
def set_name() -> Response:
    """The operator's name for a participant or market (``id``, ``name``; an empty name
    clears it, and gsy-e's shows again). Kept in the portal's database, not on chain."""
    operator()
    body = json_body()
    try:
        pid = canonical_id(body_field(body, "id"))
    except BadParticipantId:
        raise BadRequest("id must be a participant or market id (a gsy-e uuid, or 0x and 64 "
                         "hexadecimal digits).") from None
    raw = body.get("name") if isinstance(body, dict) else None
    if raw is not None and not isinstance(raw, str):
        raise BadRequest("Send name as text (empty, or null, clears it).")
    raw = (raw or "").strip()
    name = clean_name(raw) if raw else None
    if raw and name is None:
        raise BadRequest("A name is 1 to {most} printable characters.", most=MAX_NAME_CHARS)
    set_display_name(db(), pid, name)
    return jsonify({"id": pid, **names_of(db(), [pid]).get(
        pid, {"name": None, "gsy_name": None, "display_name": None})})
