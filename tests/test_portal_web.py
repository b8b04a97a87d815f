"""The portal web app under real gunicorn (2 workers) on the real chain, with a gsy-e
recording replayed and indexed: sign-in with a wallet's real signature, every sign-in
refusal as a sentence with nobody signed in, CSRF, the session cookie's flags, sign-out,
each participant's own bill (equal to ``billOf``), trades (equal to the recording's), slots,
statements and CSV exports, 403 for another participant's data, and the operator's view;
each on a SQLite index and on a PostgreSQL one (a real server, runner/postgres.py)."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from portal_fixtures import ENGINES, open_period_bill_on_chain
from portal_web_fixtures import (
    CONTACT,
    EXPLORER,
    REGISTERS,
    PortalClient,
    PortalServices,
    PortalWorld,
    as_figures,
    expected_community,
    expected_month,
    gsy_names,
    portal_env,
    sign,
)
from prometheus_checks import assert_prometheus_text
from pypdf import PdfReader

from bridge.config import BridgeSettings
from closer.config import CloserSettings
from ingest.config import IngestSettings, MqttSettings
from pilotchain.errors import ConfigError
from pilotchain.operator import deactivate_meter_call, register_meter_call
from pilotchain.operator_input import parse_id, parse_meter
from pilotchain.pages import SECURITY_HEADERS
from pilotchain.settlement import SettlementABI
from pilotchain.trades import uuid_to_bytes32
from portal.db import Database
from portal.siwe import parse_message
from portal.web.api import CSV_CHUNK_ROWS, SLOT_CSV, csv_response
from portal.web.app import STALE
from portal.web.config import WebSettings
from runner.portal import PortalWebService, with_health_urls
from runner.ports import free_port

HOUSE = str(uuid.UUID(int=7))
ADDRESS = "0x00000000000000000000000000000000000000aa"


@pytest.fixture(scope="module", params=ENGINES)
def portal_engine(request: pytest.FixtureRequest) -> str:
    """Every test of a signed-in portal on a SQLite index and on a PostgreSQL one: the chain
    (deployment, trades, meters) is made once, only the index and the web app differ."""
    engine: str = request.param
    return engine


def signed_in(world: PortalWorld, account: object) -> PortalClient:
    client = world.client()
    reply = client.sign_in(account)  # type: ignore[arg-type]
    assert reply.status_code == 200, reply.text
    return client


def assert_nobody(client: PortalClient) -> None:
    assert client.me()["signed_in"] is False


# --- sign-in ------------------------------------------------------------------------------


def test_a_participant_signs_in_sees_who_and_signs_out(portal_world: PortalWorld) -> None:
    world = portal_world
    client = world.client()
    assert_nobody(client)
    message = client.challenge(world.alice)
    fields = parse_message(message)
    assert fields.address == world.alice.address
    assert fields.chain_id == world.target.net.settings.chain_id
    assert fields.domain == world.url.removeprefix("http://")
    reply = client.verify(message, sign(world.alice, message))
    assert reply.status_code == 200, reply.text
    assert reply.json()["participant"] == world.a
    cookie = reply.headers["Set-Cookie"]
    assert re.search(r"pilotchain_portal=", cookie)
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Expires="):
        assert flag in cookie, f"the session cookie lacks {flag}: {cookie}"
    me = client.me()
    assert (me["signed_in"], me["wallet"], me["participant"], me["role"]) == \
        (True, world.alice.address, world.a, "participant")

    stolen = dict(client.cookies)
    assert client.post("/api/auth/signout").status_code == 200
    assert_nobody(client)
    # The copied cookie of the ended session opens nothing: sessions end on the server.
    again = PortalClient(world.url, cookies=stolen)
    assert again.get(f"/api/participants/{world.a}/bill").status_code == 401


def test_a_wallet_registered_to_nobody_is_told_whom_to_ask(portal_world: PortalWorld) -> None:
    stranger = Account.create()
    client = portal_world.client()
    reply = client.sign_in(stranger)
    assert reply.status_code == 403
    assert reply.json() == {"error": (
        f"The wallet {stranger.address} is not registered to a participant of "
        f"{portal_world.target.net.settings.network_name}; ask {CONTACT} to register it.")}
    assert_nobody(client)


def refused_cases(world: PortalWorld, client: PortalClient) -> dict[str, tuple[str, str]]:
    """Each bad sign-in as (message, signature), built on fresh challenges."""
    def fresh() -> str:
        return client.challenge(world.alice)

    def changed(old: str, new: str) -> tuple[str, str]:
        text = fresh()
        assert re.search(old, text), (old, text)
        text = re.sub(old, new, text, count=1)
        return text, sign(world.alice, text)

    later = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    host = world.url.removeprefix("http://")
    chain_id = world.target.net.settings.chain_id
    malformed = fresh().replace("Version: 1", "Version: one")
    other = fresh()
    return {
        "expired": changed(r"Expiration Time: .*", f"Expiration Time: {later}"),
        "wrong domain": changed(re.escape(host), "evil.example"),
        "wrong chain id": changed(f"Chain ID: {chain_id}", "Chain ID: 1"),
        "another key": (other, sign(Account.create(), other)),
        "malformed": (malformed, sign(world.alice, malformed)),
    }


# A message changed after it was issued is refused as such, whatever the change: the
# portal compares it with the one it issued before reading its fields (what each field's
# own check says is shown on messages built to pass the comparison, in test_portal_siwe.py).
NOT_ISSUED = ("This sign-in message is not the one the portal issued: it was changed after "
              "it was issued, so nothing was signed in; sign in again.")
SENTENCES = {
    "expired": NOT_ISSUED,
    "wrong domain": NOT_ISSUED,
    "wrong chain id": NOT_ISSUED,
    "another key": "The signature was made by 0x",
    "malformed": "The sign-in message is not a valid EIP-4361 message: Version must be 1",
}


def test_every_bad_sign_in_is_refused_with_its_sentence(portal_world: PortalWorld) -> None:
    client = portal_world.client()
    for kind, (message, signature) in refused_cases(portal_world, client).items():
        reply = client.verify(message, signature)
        assert reply.status_code in (400, 401), (kind, reply.text)
        assert reply.json()["error"].startswith(SENTENCES[kind]), (kind, reply.text)
        assert "Traceback" not in reply.text
        assert_nobody(client)


def test_the_metrics_port_counts_sign_ins_and_shows_the_index_lag(
        portal_world: PortalWorld) -> None:
    """On its own loopback port (PORTAL_METRICS_PORT), summed over both gunicorn workers,
    every line clean for promtool; the public port has no /metrics."""
    url = f"{portal_world.service.settings.metrics_url}/metrics"
    before = assert_prometheus_text(requests.get(url, timeout=30))
    assert portal_world.client().sign_in(portal_world.alice).status_code == 200
    stranger = portal_world.client()
    message = stranger.challenge(portal_world.bob)
    assert stranger.verify(message, sign(portal_world.alice, message)).status_code == 401
    assert stranger.verify("not a message", "0x00").status_code == 401
    assert requests.get(f"{portal_world.url}/metrics", timeout=10).status_code == 404

    after = assert_prometheus_text(requests.get(url, timeout=30))
    head = portal_world.w3.eth.block_number

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0)

    assert delta("pilotchain_portal_sign_ins_total") == 1
    assert delta('pilotchain_portal_sign_ins_refused_total{reason="signature_refused"}') == 1
    assert delta('pilotchain_portal_sign_ins_refused_total{reason="malformed_message"}') == 1
    assert delta('pilotchain_portal_sign_ins_refused_total{reason="not_registered"}') == 0
    verified = ('pilotchain_http_request_duration_seconds_count{method="POST",'
                'route="/api/auth/verify",status_class="%s"}')
    assert (delta(verified % "2xx"), delta(verified % "4xx")) == (1, 2)
    indexed = Database(portal_world.database_url).cursor()
    assert indexed is not None
    assert after["pilotchain_portal_indexed_block"] == indexed.block_number
    assert indexed.block_number <= after["pilotchain_chain_head_block"] <= head
    assert after["pilotchain_portal_index_lag_blocks"] == \
        after["pilotchain_chain_head_block"] - indexed.block_number
    assert after["pilotchain_chain_connected"] == after["pilotchain_portal_index_connected"] == 1


def test_a_replayed_message_is_refused(portal_world: PortalWorld) -> None:
    first = portal_world.client()
    message = first.challenge(portal_world.alice)
    signature = sign(portal_world.alice, message)
    assert first.verify(message, signature).status_code == 200
    # The same signed message again, from another browser (another worker, maybe).
    thief = portal_world.client()
    thief.me()
    reply = thief.verify(message, signature)
    assert reply.status_code == 401
    assert reply.json() == {"error": "This sign-in message was already used or was not "
                                     "issued by this portal; sign in again."}
    assert_nobody(thief)


def test_a_nonce_of_another_wallet_is_refused(portal_world: PortalWorld) -> None:
    client = portal_world.client()
    message = client.challenge(portal_world.bob)
    text = message.replace(portal_world.bob.address, portal_world.alice.address)
    reply = client.verify(text, sign(portal_world.alice, text))
    assert reply.status_code == 401
    assert "issued to another wallet" in reply.json()["error"]
    assert_nobody(client)


def test_posts_without_the_csrf_token_are_refused(portal_world: PortalWorld) -> None:
    client = portal_world.client()
    client.me()
    for path, body in (("/api/auth/challenge", {"address": portal_world.alice.address}),
                       ("/api/auth/verify", {"message": "x", "signature": "0x"}),
                       ("/api/auth/signout", {})):
        reply = client.post(path, json=body, headers={"X-CSRFToken": "forged"})
        assert (reply.status_code, reply.json()) == (400, {"error": STALE}), path
    signed = signed_in(portal_world, portal_world.alice)
    reply = signed.post("/api/auth/signout", headers={"X-CSRFToken": ""})
    assert reply.status_code == 400
    assert signed.me()["signed_in"] is True


# --- sign-in: no relay, no edits, no flood (issue 19) -----------------------------------------


def test_a_signature_made_for_another_domain_never_signs_in(portal_world: PortalWorld) -> None:
    """A phishing page at evil.example asks the portal for a challenge with its own Host, has
    the victim's wallet sign it there (for evil.example, so the wallet sees nothing odd) and
    relays the signature: no session, and nothing of the participant's can be read."""
    world = portal_world
    phisher = world.client()
    phisher.me()
    evil = {"Host": "evil.example"}
    reply = phisher.post("/api/auth/challenge", json={"address": world.alice.address},
                         headers=evil)
    assert reply.status_code == 200, reply.text
    issued = reply.json()["message"]
    fields = parse_message(issued)
    # The portal's own domain, whatever Host the request named.
    assert (fields.domain, fields.uri) == (world.domain, f"http://{world.domain}/")
    assert reply.json()["domain"] == world.domain
    assert "evil.example" not in issued
    # The page shows the wallet a message for its own domain; the victim signs it.
    relayed = issued.replace(world.domain, "evil.example")
    assert parse_message(relayed).domain == "evil.example"
    reply = phisher.post("/api/auth/verify", headers=evil,
                         json={"message": relayed, "signature": sign(world.alice, relayed)})
    assert reply.status_code == 401, reply.text
    assert "Traceback" not in reply.text
    assert_nobody(phisher)
    for host in ({}, evil):
        assert phisher.get(f"/api/participants/{world.a}/bill", headers=host).status_code == 401


def test_only_the_message_the_portal_issued_signs_in(portal_world: PortalWorld) -> None:
    """Same nonce, same fields, another text (the statement): the wallet was shown something
    the portal never said, so it signs nobody in."""
    client = portal_world.client()
    issued = client.challenge(portal_world.alice)
    edited = issued.replace("Sign in to the PilotChain participant portal.",
                            "Sign in and approve the transfer of all your funds.")
    assert edited != issued and parse_message(edited).nonce == parse_message(issued).nonce
    reply = client.verify(edited, sign(portal_world.alice, edited))
    assert (reply.status_code, reply.json()) == (401, {"error": NOT_ISSUED})
    assert_nobody(client)
    # Its nonce is used up too: the message as issued no longer signs in either.
    reply = client.verify(issued, sign(portal_world.alice, issued))
    assert reply.status_code == 401
    assert_nobody(client)


def waiting_nonces(world: PortalWorld, wallet: str) -> int:
    db = Database(world.database_url)
    try:
        return int(db.fetch("SELECT COUNT(*) FROM web_nonces WHERE wallet = ?",
                            (wallet.lower(),))[0][0])
    finally:
        db.close()


def test_challenges_are_limited_per_wallet_and_per_client(portal_world: PortalWorld) -> None:
    world = portal_world
    per_wallet = WebSettings().challenges_per_wallet
    per_client = WebSettings().challenges_per_client
    # One wallet, asked for again and again: only the newest messages wait; the oldest is
    # replaced, not the newest refused, so nobody can lock a wallet out this way.
    asker = world.client()
    messages = [asker.challenge(world.bob) for _ in range(per_wallet + 2)]
    assert waiting_nonces(world, world.bob.address) == per_wallet
    reply = asker.verify(messages[0], sign(world.bob, messages[0]))
    assert reply.status_code == 401
    assert "already used or was not issued" in reply.json()["error"]
    assert asker.verify(messages[-1], sign(world.bob, messages[-1])).status_code == 200

    # One client asking for many wallets: refused once per_client messages wait, with the
    # time until the oldest expires; other clients are not affected.
    flooder = world.client()
    flooder.me()
    answers = [flooder.post("/api/auth/challenge", json={"address": Account.create().address})
               for _ in range(per_client + 1)]
    assert [a.status_code for a in answers] == [200] * per_client + [429]
    refused = answers[-1]
    assert refused.json()["error"].startswith(
        f"Too many sign-in messages were asked for from your network address ({per_client} "
        "may wait for a signature at once); sign the last one, or try again in ")
    nonce_minutes = WebSettings().nonce_minutes
    assert 0 < int(refused.headers["Retry-After"]) <= 60 * nonce_minutes
    assert signed_in(world, world.alice).me()["signed_in"] is True


def test_own_data_by_the_0x_form_of_the_id(portal_world: PortalWorld) -> None:
    """Participant ids are gsy-e uuids, or 0x and the 64 hex digits of their bytes32: both
    name the same participant everywhere."""
    world = portal_world
    client = signed_in(world, world.alice)
    hex_id = "0x" + uuid_to_bytes32(world.a).hex()
    for route in OWN:
        by_uuid = client.get(f"/api/participants/{world.a}/{route}")
        for form in (hex_id, hex_id.upper().replace("0X", "0x"), world.a.upper()):
            by_hex = client.get(f"/api/participants/{form}/{route}")
            assert (by_hex.status_code, by_hex.content) == (200, by_uuid.content), (route, form)
    other = "0x" + uuid_to_bytes32(world.b).hex()
    assert client.get(f"/api/participants/{other}/bill").status_code == 403
    bad = client.get("/api/participants/0x1234/bill")
    assert (bad.status_code, bad.json()) == (400, {"error": (
        "'0x1234' is not a participant id (a gsy-e uuid or 0x and 64 hexadecimal digits).")})
    # Before signing in, nothing is said about ids.
    assert world.client().get("/api/participants/0x1234/bill").status_code == 401


BOUNDS = (
    ("page=99999999999999999999", "page must be a whole number between 1 and 2000000, not "
                                  "'99999999999999999999'."),
    ("page=0", "page must be a whole number between 1 and 2000000, not '0'."),
    ("page=%C2%B2", "page must be a whole number between 1 and 2000000, not '²'."),
    ("page=-1", "page must be a whole number between 1 and 2000000, not '-1'."),
    ("per_page=501", "per_page must be a whole number between 1 and 500, not '501'."),
    ("per_page=1e3", "per_page must be a whole number between 1 and 500, not '1e3'."),
    ("period=99999999999999999999", "period must be a whole number between 1 and 1000000000, "
                                    "not '99999999999999999999'."),
    ("market=%00", "market must be a market id (a gsy-e uuid, or 0x and 64 hexadecimal "
                   "digits), not '\\x00'."),
)


@pytest.mark.parametrize("query, sentence", BOUNDS, ids=[q for q, _ in BOUNDS])
def test_every_page_parameter_is_bounded_with_a_sentence(portal_world: PortalWorld,
                                                         query: str, sentence: str) -> None:
    client = signed_in(portal_world, portal_world.alice)
    for route in ("trades", "trades.csv"):
        reply = client.get(f"/api/participants/{portal_world.a}/{route}?{query}")
        assert (reply.status_code, reply.json()) == (400, {"error": sentence}), route


def test_a_deeply_nested_body_is_a_400(portal_world: PortalWorld) -> None:
    """As deep as PORTAL_MAX_BODY_BYTES allows: a 400, whatever the parser's recursion
    limit (portal.web.http.json_body)."""
    deep = "[" * 8_000 + "]" * 8_000
    client = portal_world.client()
    client.me()
    reply = client.post("/api/auth/challenge", data=deep,
                        headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] in ("Send a JSON object as the request body.",
                                     "The JSON body is nested too deeply; send a flat JSON "
                                     "object.")
    operator = signed_in(portal_world, portal_world.operator)
    reply = operator.post("/api/operator/transactions/close-period", data=deep,
                          headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text


@pytest.mark.parametrize("body, sentence", [
    ({"end_slot": "99999999999999999999"}, "The time '99999999999999999999' must be whole "
                                           "seconds after 1970 and before the year 10000."),
    ({"end_slot": "\u00b2"}, "The time '²' is neither unix seconds nor ISO-8601"),
    ({"end_slot": 10**30}, "The time '1000000000000000000000000000000' must be whole seconds"),
])
def test_operator_numbers_are_bounded_with_a_sentence(portal_world: PortalWorld,
                                                      body: dict, sentence: str) -> None:
    operator = signed_in(portal_world, portal_world.operator)
    reply = operator.post("/api/operator/transactions/close-period", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"].startswith(sentence)


def assert_secure_headers(reply: requests.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name) == value, (reply.url, name)
    assert "Strict-Transport-Security" not in reply.headers  # plain HTTP here
    assert "Server" not in reply.headers, reply.headers.get("Server")


def test_every_answer_carries_the_security_headers_and_no_server_banner(
        portal_world: PortalWorld) -> None:
    client = signed_in(portal_world, portal_world.alice)
    for path in ("/", "/health", "/api/me", f"/api/participants/{portal_world.a}/bill",
                 f"/api/participants/{portal_world.a}/trades.csv", "/static/portal.js",
                 "/vendor/uplot/uPlot.min.css", "/api/nothing", "/nothing",
                 f"/api/participants/{portal_world.b}/bill", "/openapi.json"):
        reply = client.get(path)
        assert_secure_headers(reply)
        assert reply.headers["Cache-Control"] == "no-store"
    assert_secure_headers(client.post("/api/auth/challenge", json={}))


# --- a participant's own data -------------------------------------------------------------


def bill_on_chain(world: PortalWorld, participant: str) -> dict[str, str]:
    pid = uuid_to_bytes32(participant)
    sold, bought, receivable, payable = world.contract().functions.billOf(pid).call()
    charges, credits = world.contract().functions.balancingOf(pid).call()
    return {"participant": participant, "energy_sold": str(sold),
            "energy_bought": str(bought), "money_receivable": str(receivable),
            "money_payable": str(payable), "balancing_charges": str(charges),
            "balancing_credits": str(credits),
            "net": str(receivable + credits - payable - charges)}


def test_the_bill_is_the_contracts(portal_world: PortalWorld) -> None:
    client = signed_in(portal_world, portal_world.alice)
    bill = client.get(f"/api/participants/{portal_world.a}/bill").json()
    assert bill == bill_on_chain(portal_world, portal_world.a)
    assert int(bill["balancing_charges"]) > 0  # the metered slots were charged


def all_trades(client: PortalClient, participant: str, **params: str) -> list[dict[str, str]]:
    found, page = [], 1
    while True:
        reply = client.get(f"/api/participants/{participant}/trades",
                           params={"page": str(page), "per_page": "37", **params})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        found += body["trades"]
        if page * 37 >= body["total"]:
            assert len(found) == body["total"]
            return found
        page += 1


def expected(records: list, participant: str) -> list[dict[str, str]]:
    return [{"trade_id": str(r.trade_id), "market": str(r.market), "seller": str(r.seller),
             "buyer": str(r.buyer), "energy": str(r.energy), "price": str(r.price)}
            for r in records if participant in (str(r.seller), str(r.buyer))]


KEYS = ("trade_id", "market", "seller", "buyer", "energy", "price")


def test_trades_are_the_recordings_paged_and_filtered(portal_world: PortalWorld) -> None:
    world = portal_world
    client = signed_in(world, world.bob)
    got = all_trades(client, world.b)
    assert [{k: t[k] for k in KEYS} for t in got] == expected(world.records, world.b)
    assert all(t["explorer_url"] == f"{EXPLORER}/tx/{t['tx_hash']}" for t in got)
    market = got[0]["market"]
    in_market = all_trades(client, world.b, market=market)
    assert in_market == [t for t in got if t["market"] == market]

    alice = signed_in(world, world.alice)
    everything = all_trades(alice, world.a)
    assert [{k: t[k] for k in KEYS} for t in everything] == \
        expected(world.records + world.metered, world.a)
    # Period 1 was closed after the metered trades: all so far are in it, none is open.
    assert all_trades(alice, world.a, period="1") == everything
    assert all_trades(alice, world.a, period="open") == []
    reply = alice.get(f"/api/participants/{world.a}/trades", params={"period": "7"})
    assert (reply.status_code, reply.json()) == (
        400, {"error": "There is no closed billing period 7."})


def test_slots_and_statements_are_the_chains(portal_world: PortalWorld) -> None:
    world = portal_world
    client = signed_in(world, world.alice)
    slots = client.get(f"/api/participants/{world.a}/slots").json()["slots"]
    assert [s["status"] for s in slots] == ["balanced"] * 3
    wh = 10**15
    assert [(s["sold"], s["bought"], s["export_energy"], s["import_energy"]) for s in slots] == [
        (str(10 * wh), "0", str(7 * wh), "0"), ("0", str(20 * wh), "0", str(26 * wh)),
        (str(5 * wh), "0", str(5 * wh), "0")]
    statements = client.get(f"/api/participants/{world.a}/statements").json()["statements"]
    on_chain = world.contract().functions.statementOf(1, uuid_to_bytes32(world.a)).call()
    assert len(statements) == 1
    assert [statements[0][k] for k in ("energy_sold", "energy_bought", "money_receivable",
                                       "money_payable", "balancing_charges",
                                       "balancing_credits", "net")] == \
        [str(v) for v in on_chain[:7]]


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_exports_equal_the_chain(portal_world: PortalWorld) -> None:
    world = portal_world
    client = signed_in(world, world.alice)
    reply = client.get(f"/api/participants/{world.a}/bill.csv")
    assert reply.headers["Content-Type"].startswith("text/csv")
    (bill,) = rows_of(reply.text)
    chain = bill_on_chain(world, world.a)
    assert {k: bill[k] for k in chain} == chain
    # The kWh and cents columns are the same integers, exactly.
    assert Decimal(bill["energy_sold_kwh"]).scaleb(18) == int(chain["energy_sold"])
    assert Decimal(bill["balancing_charges_cents"]).scaleb(18) == \
        int(chain["balancing_charges"])
    trades = rows_of(client.get(f"/api/participants/{world.a}/trades.csv").text)
    assert [{k: t[k] for k in KEYS} for t in trades] == \
        expected(world.records + world.metered, world.a)
    slots = rows_of(client.get(f"/api/participants/{world.a}/slots.csv").text)
    assert len(slots) == 3


def test_csv_of_an_unmetered_slot_leaves_its_amounts_empty() -> None:
    """An unmetered slot has no readings and no charges: empty cells, also in the kWh and
    cents columns, beside a balanced one's exact amounts; the file comes in chunks."""
    balanced = {"slot": 900, "slot_time": "1970-01-01T00:15:00Z", "status": "balanced",
                "meter": "0x" + "aa" * 32, "import_energy": 1_500_000_000_000_000_000,
                "export_energy": 0, "sold": 0, "bought": 10**18, "shortfall_charge": 5,
                "excess_charge": 0, "surplus_credit": 0, "tx_hash": "0x" + "bb" * 32}
    unmetered = {**balanced, "slot": 1800, "slot_time": "1970-01-01T00:30:00Z",
                 "status": "unmetered", **dict.fromkeys((
                     "meter", "import_energy", "export_energy", "shortfall_charge",
                     "excess_charge", "surplus_credit"))}
    reply = csv_response("slots-x", SLOT_CSV,
                                    [balanced, unmetered] * CSV_CHUNK_ROWS)
    assert reply.is_streamed
    rows = rows_of(reply.get_data(as_text=True))
    assert len(rows) == 2 * CSV_CHUNK_ROWS
    assert rows[0]["import_energy_kwh"] == "1.5" and rows[0]["shortfall_charge_cents"] == \
        "0.000000000000000005"
    assert {k: rows[1][k] for k in ("meter", "import_energy", "import_energy_kwh",
                                    "shortfall_charge_cents", "sold_kwh")} == {
        "meter": "", "import_energy": "", "import_energy_kwh": "",
        "shortfall_charge_cents": "", "sold_kwh": "0"}


# --- privacy -------------------------------------------------------------------------------

OWN = ("bill", "trades", "summary", "slots", "statements", "bill.csv", "trades.csv",
       "slots.csv", "statements.csv")


@pytest.mark.parametrize("route", OWN)
def test_a_participant_cannot_see_anothers_data(portal_world: PortalWorld, route: str) -> None:
    client = signed_in(portal_world, portal_world.alice)
    reply = client.get(f"/api/participants/{portal_world.b}/{route}")
    assert (reply.status_code, reply.json()) == (
        403, {"error": "You may see only your own participant's data."})
    assert client.get(f"/api/participants/{portal_world.a}/{route}").status_code == 200
    anonymous = portal_world.client()
    assert anonymous.get(f"/api/participants/{portal_world.a}/{route}").status_code == 401


def test_only_the_operator_sees_the_overview(portal_world: PortalWorld) -> None:
    world = portal_world
    participant = signed_in(world, world.alice)
    assert participant.get("/api/operator/overview").status_code == 403
    assert participant.post("/api/operator/transactions/register",
                            json={"participant": world.a, "wallet": world.bob.address}
                            ).status_code == 403
    operator = signed_in(world, world.operator)
    assert operator.me()["role"] == "operator"
    view = operator.get("/api/operator/overview").json()
    assert {(p["participant"], p["wallet"]) for p in view["participants"]} == \
        {(world.a, world.alice.address), (world.b, world.bob.address),
         (world.c, world.carol.address)}
    assert len(view["meters"]) == 1 and view["meters"][0]["participant"] == world.a
    # The meter's newest reading, and the slot boundaries the chain passed since (the meter
    # reads no more after the world was made: one boundary each 15 minutes of chain time).
    (meter,) = view["meters"]
    last = world.metered[0].time_slot + 3 * 900
    assert meter["last_reading"] == {"time": last, "import_wh": REGISTERS[-1][0],
                                     "export_wh": REGISTERS[-1][1]}
    now = world.w3.eth.get_block("latest")["timestamp"] // 900 * 900
    assert meter["missing"] in {(now - last) // 900, (now - last) // 900 + 1}
    assert view["totals"]["trades"] == len(world.records) + len(world.metered) + \
        len(world.others)
    # The community's energy per balanced slot, from the registers and the trades alone.
    assert [{k: int(v) for k, v in row.items() if k != "slot_time"}
            for row in view["community"]] == expected_community(world)
    assert all(row["slot_time"].endswith("Z") for row in view["community"])
    # The operator sees every participant's data.
    assert operator.get(f"/api/participants/{world.b}/bill").json() == \
        bill_on_chain(world, world.b)


def test_each_participants_open_period_net_is_the_contracts(portal_world: PortalWorld) -> None:
    """The overview's bill of the open period of every participant equals the contract's
    own at the indexed block (``billOf`` and ``balancingOf`` less every closed period's
    ``statementOf``, typed reads): nothing for A and B, whose trades and balancing all went
    into period 1; C's two trades since, not the one before the period was closed."""
    world = portal_world
    view = signed_in(world, world.operator).get("/api/operator/overview").json()
    db = Database(world.database_url)
    try:
        cursor = db.cursor()
    finally:
        db.close()
    assert cursor is not None
    bills = {p["participant"]: p["open_period"] for p in view["participants"]}
    assert set(bills) == {world.a, world.b, world.c}
    for who, bill in bills.items():
        on_chain = open_period_bill_on_chain(world.target.net.rpc_url,
                                             world.target.deployment,
                                             uuid_to_bytes32(uuid.UUID(who)),
                                             cursor.block_number)
        assert bill == {k: str(v) for k, v in on_chain.items()}, who
    sold, bought = world.others[1], world.others[2]
    assert bills[world.c] == {
        "energy_sold": str(sold.energy), "energy_bought": str(bought.energy),
        "money_receivable": str(sold.price), "money_payable": str(bought.price),
        "balancing_charges": "0", "balancing_credits": "0",
        "net": str(sold.price - bought.price)}
    assert bills[world.a]["net"] == bills[world.b]["net"] == "0"


# --- names and the period at a glance ------------------------------------------------------


def names_shown(client: PortalClient, participant: str) -> dict[str, str]:
    """Every name the participant's pages of trades hand out."""
    found: dict[str, str] = {}
    page = 1
    while True:
        body = client.get(f"/api/participants/{participant}/trades?page={page}&per_page=100"
                          ).json()
        found.update(body["names"])
        if page * 100 >= body["total"]:
            return found
        page += 1


def everything_seen(client: PortalClient, participant: str) -> str:
    """The text of every answer a participant's pages can ask for about itself."""
    texts = [client.get(f"/api/participants/{participant}/{route}").text for route in OWN]
    texts += [client.get(f"/api/participants/{participant}/summary?period={p}").text
              for p in ("open", "1")]
    total = client.get(f"/api/participants/{participant}/trades").json()["total"]
    texts += [client.get(f"/api/participants/{participant}/trades?page={page}&per_page=100"
                         ).text for page in range(1, total // 100 + 2)]
    return "\n".join(texts)


def test_a_participant_sees_its_counterparties_by_name_and_nobody_elses(
        portal_world: PortalWorld) -> None:
    """gsy-e's names (read by the portal from the trade stream) for the participant itself,
    the counterparties of its own trades and its markets; another participant's
    counterparties' names appear in none of its answers (the privacy rule)."""
    world, names = portal_world, gsy_names()
    mine = [r for r in world.records + world.metered if world.a in (str(r.seller),
                                                                     str(r.buyer))]
    theirs = {world.a} | {str(r.market) for r in mine} | {
        str(r.buyer if str(r.seller) == world.a else r.seller) for r in mine}
    client = signed_in(world, world.alice)
    expected_names = {i: names[i] for i in theirs if i in names}
    assert names_shown(client, world.a) == expected_names
    assert expected_names[world.a] == "House 1" and expected_names[world.b] == "House 2"
    strangers = set(names.values()) - set(expected_names.values())
    assert strangers == {"H2 PV", "H2 General Load"}  # House 2's devices: B's counterparties
    seen = everything_seen(client, world.a)
    assert [name for name in strangers if name in seen] == []
    # B, signed in, does see them: they are its counterparties.
    assert strangers <= set(names_shown(signed_in(world, world.bob), world.b).values())


def test_the_operator_names_and_renames_participants_and_markets(
        portal_world: PortalWorld) -> None:
    world, names = portal_world, gsy_names()
    operator = signed_in(world, world.operator)
    alice = signed_in(world, world.alice)
    unnamed = sorted({str(r.market) for r in world.records
                      if world.a in (str(r.seller), str(r.buyer))} - set(names))
    assert unnamed, "the top area's market: gsy-e names it nowhere"
    reply = operator.post("/api/operator/names",
                          json={"id": unnamed[0], "name": "  Community   market "})
    assert reply.json() == {"id": unnamed[0], "name": "Community market", "gsy_name": None,
                            "display_name": "Community market"}
    try:
        operator.post("/api/operator/names", json={"id": world.b, "name": "Nachbarn Müller"})
        shown = names_shown(alice, world.a)
        assert (shown[unnamed[0]], shown[world.b]) == ("Community market", "Nachbarn Müller")
        view = operator.get("/api/operator/overview").json()["names"]
        assert view[world.b] == {"name": "Nachbarn Müller", "gsy_name": "House 2",
                                 "display_name": "Nachbarn Müller"}
    finally:
        for pid in (unnamed[0], world.b):
            assert operator.post("/api/operator/names", json={"id": pid, "name": ""}
                                 ).status_code == 200
    shown = names_shown(alice, world.a)
    assert unnamed[0] not in shown and shown[world.b] == "House 2"
    for body, sentence in (({"id": world.b, "name": "x" * 81},
                            "A name is 1 to 80 printable characters."),
                           ({"id": "House 2", "name": "x"},
                            "id must be a participant or market id (a gsy-e uuid, or 0x and "
                            "64 hexadecimal digits).")):
        reply = operator.post("/api/operator/names", json=body)
        assert (reply.status_code, reply.json()) == (400, {"error": sentence})


def test_the_period_at_a_glance_is_the_recordings_and_the_meters(
        portal_world: PortalWorld) -> None:
    """The summary of billing period 1 equals what the recording, the registers and the
    rates give, computed here; its net equals the statement's on chain; the open period
    (nothing recorded since) is empty."""
    world = portal_world
    client = signed_in(world, world.alice)
    got = client.get(f"/api/participants/{world.a}/summary?period=1").json()
    want = expected_month(world, world.a)
    assert as_figures(got, want) == want
    assert want["balancing_charges"] > 0 and want["from_grid"] > 0
    assert [(line["kind"], line["deviation"], line["rate"], line["amount"])
            for line in got["balancing"]] == [
        ("shortfall", str(3 * 10**15), str(40 * 10**18), str(3 * 10**15 * 40)),
        ("excess", str(6 * 10**15), str(30 * 10**18), str(6 * 10**15 * 30))]
    statement = world.contract().functions.statementOf(1, uuid_to_bytes32(world.a)).call()
    assert int(got["net"]) == statement[6]
    assert got["name"] == "House 1"
    (meter,) = got["meters"]
    last = world.metered[0].time_slot + 3 * 900
    assert (meter["participant"], meter["active_until"], meter["last_reading"]) == (
        world.a, None, {"time": last, "import_wh": REGISTERS[-1][0],
                        "export_wh": REGISTERS[-1][1]})
    assert got["unmetered_slots"] == 0
    empty = client.get(f"/api/participants/{world.a}/summary").json()
    assert (empty["period"], empty["trades"], empty["net"], empty["balancing"]) == (
        None, 0, "0", [])
    bob = signed_in(world, world.bob)
    got = bob.get(f"/api/participants/{world.b}/summary?period=1").json()
    want_b = expected_month(world, world.b)
    assert as_figures(got, want_b) == want_b
    reply = client.get(f"/api/participants/{world.a}/summary?period=7")
    assert (reply.status_code, reply.json()) == (
        400, {"error": "There is no closed billing period 7."})


def exactly(value: int) -> str:
    """A contract integer in kWh or ct with every digit (computed here, not by the app)."""
    text = f"{Decimal(value).scaleb(-18):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


def test_a_statement_as_pdf_carries_the_contracts_amounts(portal_world: PortalWorld,
                                                         tmp_path: Path) -> None:
    """Period 1's statement as a PDF document: its text (extracted with pypdf) holds
    ``statementOf``'s amounts to the last digit, the trades by counterparty name (nobody
    else's), the balancing lines and the chain reference; in German with a decimal comma. Its
    first page drawn by poppler is docs/portal.md's picture (``portal-statement.png``)."""
    world = portal_world
    client = signed_in(world, world.alice)
    reply = client.get(f"/api/participants/{world.a}/statements/1.pdf?lang=en")
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/pdf"
    (tmp_path / "statement.pdf").write_bytes(reply.content)
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile",
                    str(tmp_path / "statement.pdf"), str(tmp_path / "portal-statement")],
                   check=True, capture_output=True, timeout=60)
    assert (tmp_path / "portal-statement.png").stat().st_size > 10_000
    text = pdf_text(reply.content)
    lines = text.splitlines()
    chain = world.contract().functions.statementOf(1, uuid_to_bytes32(world.a)).call()
    sold, bought, receivable, payable, charges, credits, net, paid = chain
    for line in (f"Energy sold: {exactly(sold)} kWh", f"Energy bought: {exactly(bought)} kWh",
                 f"Receivable for energy sold: {exactly(receivable)} ct",
                 f"Payable for energy bought: {exactly(payable)} ct",
                 f"Balancing charges: {exactly(charges)} ct",
                 f"Balancing credits: {exactly(credits)} ct", "Paid: no, not yet",
                 "Participant: House 1", f"Participant id: {world.a}"):
        assert line in lines, (line, lines[:20])
    assert any(line.startswith(f"Net: {exactly(net)} ct (") for line in lines), lines[:20]
    assert not paid
    mine = expected_month(world, world.a)["trades"]
    assert f"Trades in this period ({mine})" in lines
    assert "House 2" in text and "H2 PV" not in text and "H2 General Load" not in text
    flowing = " ".join(text.split())  # lines as wrapped
    assert "short 0.003 kWh at 40.00 ct/kWh: charge 0.12 ct" in flowing
    assert "0.006 kWh from the grid at 30.00 ct/kWh: charge 0.18 ct" in flowing
    assert world.target.deployment.address in text
    german = pdf_text(client.get(f"/api/participants/{world.a}/statements/1.pdf?lang=de"
                                 ).content).splitlines()
    assert f"Verkaufte Energie: {exactly(sold).replace('.', ',')} kWh" in german
    for path, status in ((f"/api/participants/{world.a}/statements/2.pdf", 400),
                         (f"/api/participants/{world.a}/statements/x.pdf", 400),
                         (f"/api/participants/{world.b}/statements/1.pdf", 403)):
        assert client.get(path).status_code == status, path


# --- the operator's health view and transactions --------------------------------------------


OPERATOR_ROUTES = (("GET", "/api/operator/health", None),
                   ("POST", "/api/operator/transactions/register-meter",
                    {"meter": str(uuid.uuid4()), "signer": Account.create().address,
                     "participant": str(uuid.uuid4())}),
                   ("POST", "/api/operator/transactions/deactivate-meter",
                    {"meter": str(uuid.uuid4())}),
                   ("POST", "/api/operator/names", {"id": str(uuid.uuid4()), "name": "X"}))


@pytest.mark.parametrize("method, path, body", OPERATOR_ROUTES)
def test_only_the_operator_reaches_the_new_routes(portal_world: PortalWorld, method: str,
                                                  path: str, body: object) -> None:
    participant = signed_in(portal_world, portal_world.alice)
    reply = participant.request(method, path, json=body)
    assert (reply.status_code, reply.json()) == (
        403, {"error": "Only the grid operator's wallet may do this."})
    anonymous = portal_world.client()
    anonymous.me()
    assert anonymous.request(method, path, json=body).status_code == 401


def test_the_operator_sees_each_services_health_and_the_dead_letters(
        portal_world: PortalWorld, portal_services: PortalServices) -> None:
    world, ops = portal_world, portal_world.ops
    view = signed_in(world, world.operator).get("/api/operator/health").json()
    health = {s["name"]: s for s in view["services"]}
    assert [health[n]["up"] for n in ("bridge", "ingest", "closer")] == [True, True, False]
    assert health["bridge"]["sentence"] == "The bridge is running."
    assert health["bridge"]["url"] == ops.health_url("bridge")
    assert health["closer"]["sentence"] == (
        f"The closer cannot be reached at {ops.health_url('closer')}; it is not running, or "
        "PORTAL_CLOSER_HEALTH_URL names the wrong address.")

    dead = view["dead_letters"]
    assert dead["error"] is None
    streams = {s["service"]: s for s in dead["streams"]}
    assert streams["bridge"]["stream"] == f"{ops.trades}:dead"
    assert streams["ingest"]["stream"] == f"{ops.readings}:dead"
    for service, entry in (("bridge", portal_services.bad_trade),
                           ("ingest", portal_services.bad_reading)):
        assert streams[service]["count"] == 1
        [shown] = streams[service]["latest"]
        assert (shown["entry_id"], shown["reason"]) == \
            (entry, portal_services.reasons[service])
        assert shown["rejected_at"]
    assert streams["bridge"]["latest"][0]["payload"] == "this is not a trade event"


def test_with_redis_and_the_services_away_the_view_says_so(
        portal_world: PortalWorld, tmp_path: Path) -> None:
    """A second portal on the same index, whose Redis and services answer nowhere: the
    health view is still a 200, each part a sentence."""
    world = portal_world
    dead_redis, dead = free_port(), {name: free_port() for name in ("bridge", "ingest",
                                                                    "ingest_mqtt", "closer")}
    env = portal_env(world.target.net, world.target.record, world.database_url,
                     tmp_path, PORTAL_SECRET_FILE=str(tmp_path / "secret"),
                     REDIS_URL=f"redis://127.0.0.1:{dead_redis}/0",
                     **{f"PORTAL_{n.upper()}_HEALTH_URL": f"http://127.0.0.1:{port}/health"
                        for n, port in dead.items()})
    service = PortalWebService(WebSettings.from_env(env), tmp_path / "pids", env)
    try:
        assert service.start(world.target.net)
        client = PortalClient(service.url)
        assert client.sign_in(world.operator).status_code == 200
        reply = client.get("/api/operator/health")
        assert reply.status_code == 200, reply.text
        view = reply.json()
    finally:
        service.stop()
    assert [(s["name"], s["up"]) for s in view["services"]] == \
        [("bridge", False), ("ingest", False), ("MQTT subscriber", False), ("closer", False)]
    assert view["services"][1]["sentence"] == (
        f"The ingest cannot be reached at http://127.0.0.1:{dead['ingest']}/health; it is not "
        "running, or PORTAL_INGEST_HEALTH_URL names the wrong address.")
    assert view["dead_letters"] == {"streams": [], "error": (
        f"Redis at redis://127.0.0.1:{dead_redis}/0 cannot be reached, so the dead-lettered "
        "entries cannot be shown right now.")}


def test_without_an_explorer_trades_link_to_none(portal_world: PortalWorld,
                                                 tmp_path: Path) -> None:
    """A second portal on the same index with EXPLORER_URL unset, as natively (there is no
    explorer there): trades carry no link that would lead nowhere."""
    world = portal_world
    env = portal_env(world.target.net, world.target.record, world.database_url, tmp_path,
                     PORTAL_SECRET_FILE=str(tmp_path / "secret"), EXPLORER_URL="")
    service = PortalWebService(WebSettings.from_env(env), tmp_path / "pids", env)
    try:
        assert service.start(world.target.net)
        client = PortalClient(service.url)
        assert client.sign_in(world.bob).status_code == 200
        reply = client.get(f"/api/participants/{world.b}/trades")
        assert reply.status_code == 200, reply.text
        trades = reply.json()["trades"]
        rows = list(csv.DictReader(io.StringIO(
            client.get(f"/api/participants/{world.b}/trades.csv").text)))
    finally:
        service.stop()
    assert trades and all(t["explorer_url"] is None and t["tx_hash"] for t in trades)
    assert rows and all(row["explorer_url"] == "" for row in rows)


def test_without_a_contact_the_grid_operator_is_named_in_each_language(
        portal_world: PortalWorld, tmp_path: Path) -> None:
    """A second portal on the same index with PORTAL_OPERATOR_CONTACT unset: the sign-in page
    and an unregistered wallet's refusal name the grid operator in the page's language (in
    German as each sentence needs it), not the English words filled into German."""
    world = portal_world
    env = portal_env(world.target.net, world.target.record, world.database_url, tmp_path,
                     PORTAL_SECRET_FILE=str(tmp_path / "secret"), PORTAL_OPERATOR_CONTACT="")
    service = PortalWebService(WebSettings.from_env(env), tmp_path / "pids", env)
    stranger = Account.create()
    network = world.target.net.settings.network_name
    try:
        assert service.start(world.target.net)
        client = PortalClient(service.url)
        english, german = client.get("/").text, client.get("/?lang=de").text
        client.cookies.pop("pilotchain_lang", None)
        refusals = {}
        for lang in ("en", "de"):
            message = client.challenge(stranger)
            reply = client.post(f"/api/auth/verify?lang={lang}", json={
                "message": message, "signature": sign(stranger, message)})
            assert reply.status_code == 403, reply.text
            refusals[lang] = reply.json()["error"]
    finally:
        service.stop()
    # The sign-in page's hint (the page also carries the catalogue, English keys and all,
    # for its script).
    hint = re.compile(r'<p class="hint">(Wallets .*?)</p>')
    assert hint.findall(english) == [
        "Wallets are registered to participants by the grid operator."]
    assert hint.findall(german) == ["Wallets werden Teilnehmern vom Netzbetreiber zugeordnet."]
    assert refusals == {
        "en": f"The wallet {stranger.address} is not registered to a participant of "
              f"{network}; ask the grid operator to register it.",
        "de": f"Die Wallet {stranger.address} ist keinem Teilnehmer von {network} "
              "zugeordnet; bitten Sie den Netzbetreiber, sie zu registrieren."}


def test_meter_transactions_carry_the_commands_calldata(portal_world: PortalWorld) -> None:
    world = portal_world
    contract = world.contract()
    client = signed_in(world, world.operator)
    meter, house, signer = uuid.uuid4(), uuid.uuid4(), Account.create().address
    reply = client.post("/api/operator/transactions/register-meter",
                        json={"meter": str(meter), "signer": signer, "participant": str(house)})
    assert reply.status_code == 200, reply.text
    expected = register_meter_call(parse_meter(str(meter)), signer, parse_id(str(house)))
    data = expected.data(SettlementABI(contract.abi)).to_0x_hex()
    assert reply.json() == {"to": contract.address, "data": data,
                            "chainId": hex(world.target.net.settings.chain_id)}

    # Deactivating the world's meter, at the start of the chain's current slot by default.
    [registered] = client.get("/api/operator/overview").json()["meters"]
    now = world.w3.eth.get_block("latest")["timestamp"]
    reply = client.post("/api/operator/transactions/deactivate-meter",
                        json={"meter": registered["meter"]})
    assert reply.status_code == 200, reply.text
    expected_at = {deactivate_meter_call(parse_meter(registered["meter"]), now // 900 * 900)
                   .data(SettlementABI(contract.abi)).to_0x_hex(),
                   deactivate_meter_call(parse_meter(registered["meter"]), now // 900 * 900 + 900)
                   .data(SettlementABI(contract.abi)).to_0x_hex()}
    assert reply.json()["data"] in expected_at


@pytest.mark.parametrize("action, body, sentence", [
    ("register-meter", {"meter": "nope", "signer": ADDRESS, "participant": HOUSE},
     "The meter id 'nope' is neither a uuid nor 0x and 64 hex digits."),
    ("register-meter", {"meter": HOUSE, "signer": "0x1234", "participant": HOUSE},
     "The meter's signing address '0x1234' is not an Ethereum address (0x and 40 hex digits, "
     "with a valid checksum if mixed case)."),
    ("register-meter", {"meter": HOUSE, "signer": ADDRESS, "participant": "bob"},
     "The participant 'bob' is neither a uuid nor 0x and 64 hex digits."),
    ("register-meter", {"meter": HOUSE, "signer": ADDRESS},
     "Send participant in a JSON object."),
    ("deactivate-meter", {"meter": HOUSE},
     f"Deactivating meter {HOUSE} refused: no meter {HOUSE} is registered."),
    ("deactivate-meter", {"meter": HOUSE, "at": "yesterday"},
     "The time 'yesterday' is neither unix seconds nor ISO-8601 such as 2026-06-21T00:15:00Z."),
    ("unregister", {"participant": HOUSE},
     f"Unregistering the wallet of {HOUSE} refused: participant {HOUSE} has no registered "
     "wallet."),
    ("register", {"participant": HOUSE, "wallet": "0xnot"},
     "The wallet '0xnot' is not an Ethereum address (0x and 40 hex digits, with a valid "
     "checksum if mixed case)."),
    ("close-period", {"end_slot": "1"},
     "Closing the period refused: 1970-01-01T00:00:01Z is not on a slot boundary."),
    ("launch-rocket", {}, "There is no operator transaction 'launch-rocket'; try register, "
     "unregister, close-period, register-meter, deactivate-meter."),
])
def test_a_bad_operator_transaction_is_refused_with_a_sentence(
        portal_world: PortalWorld, action: str, body: dict[str, str], sentence: str) -> None:
    client = signed_in(portal_world, portal_world.operator)
    reply = client.post(f"/api/operator/transactions/{action}", json=body)
    assert (reply.status_code, reply.json()) == (400, {"error": sentence})


def test_what_the_contract_refuses_is_refused_before_the_wallet_is_asked(
        portal_world: PortalWorld) -> None:
    world = portal_world
    client = signed_in(world, world.operator)
    [registered] = client.get("/api/operator/overview").json()["meters"]
    reply = client.post("/api/operator/transactions/register-meter", json={
        "meter": registered["meter"], "signer": ADDRESS, "participant": HOUSE})
    assert reply.json() == {"error": (
        f"Registering meter {registered['meter']} refused: the meter {registered['meter']} is "
        "already registered; a meter id is used once.")}
    last_end = world.contract().functions.periodEnd(1).call()
    reply = client.post("/api/operator/transactions/close-period",
                        json={"end_slot": str(last_end)})
    shown = datetime.fromtimestamp(last_end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert reply.json() == {"error": (
        f"Closing the period refused: the previous period already ends at {shown}; the next "
        f"must end later than that, not at {shown}.")}


# --- errors in the request's language -----------------------------------------------------

# The three ways a request names German, as the page's language is chosen (portal.web.i18n):
# the browser's Accept-Language, the language switch's cookie, the lang query parameter.
GERMAN_WAYS = ("Accept-Language", "cookie", "query")


def in_german(client: PortalClient, way: str, method: str, path: str,
              **kwargs: Any) -> requests.Response:
    """``method path`` from ``client``, asking for German in ``way``."""
    if way == "Accept-Language":
        kwargs["headers"] = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
    elif way == "cookie":
        client.cookies["pilotchain_lang"] = "de"
    else:
        path += ("&" if "?" in path else "?") + "lang=de"
    try:
        return client.request(method, path, **kwargs)
    finally:
        client.cookies.pop("pilotchain_lang", None)


@pytest.mark.parametrize("way", GERMAN_WAYS)
def test_the_api_answers_its_errors_in_the_requests_language(portal_world: PortalWorld,
                                                             way: str) -> None:
    """Each error sentence in German when the request asks for it (a 400, 401, 403, 404 and
    405, the operator's refused forms and what the contract refuses), with its values as
    they were; the same requests without a language get the English sentences."""
    world = portal_world
    alice, operator, anonymous = (signed_in(world, world.alice),
                                  signed_in(world, world.operator), world.client())
    cases: list[tuple[PortalClient, str, str, dict[str, Any], int, str, str]] = [
        (anonymous, "GET", f"/api/participants/{world.a}/bill", {}, 401,
         "Melden Sie sich zuerst mit Ihrer Wallet an (oder erneut: die Anmeldung ist "
         "abgelaufen).",
         "Sign in with your wallet first (or again: the sign-in has ended)."),
        (alice, "GET", f"/api/participants/{world.b}/bill", {}, 403,
         "Sie dürfen nur die Daten Ihres eigenen Teilnehmers sehen.",
         "You may see only your own participant's data."),
        (alice, "GET", f"/api/participants/{world.a}/trades?page=0", {}, 400,
         "page muss eine ganze Zahl zwischen 1 und 2000000 sein, nicht '0'.",
         "page must be a whole number between 1 and 2000000, not '0'."),
        (alice, "GET", "/api/participants/0x1234/bill", {}, 400,
         "'0x1234' ist keine Teilnehmer-ID (eine gsy-e-UUID oder 0x und 64 "
         "Hexadezimalziffern).",
         "'0x1234' is not a participant id (a gsy-e uuid or 0x and 64 hexadecimal digits)."),
        (alice, "GET", "/api/nowhere", {}, 404, "Diesen Endpunkt hat das Portal nicht.",
         "There is no such portal endpoint."),
        (alice, "GET", "/api/auth/verify", {}, 405,
         "Dieser Endpunkt nimmt keine GET-Anfragen an.",
         "This endpoint does not accept GET requests."),
        (operator, "POST", "/api/operator/transactions/register",
         {"json": {"participant": HOUSE, "wallet": "0xnot"}}, 400,
         "Die Angabe '0xnot' (Wallet) ist keine Ethereum-Adresse (0x und 40 "
         "Hexadezimalziffern, in gemischter Schreibung mit gültiger Prüfsumme).",
         "The wallet '0xnot' is not an Ethereum address (0x and 40 hex digits, with a valid "
         "checksum if mixed case)."),
        (operator, "POST", "/api/operator/transactions/register-meter",
         {"json": {"meter": "nope", "signer": ADDRESS, "participant": HOUSE}}, 400,
         "Die Angabe 'nope' (Zähler-ID) ist weder eine UUID noch 0x und 64 "
         "Hexadezimalziffern.",
         "The meter id 'nope' is neither a uuid nor 0x and 64 hex digits."),
        (operator, "POST", "/api/operator/transactions/unregister",
         {"json": {"participant": HOUSE}}, 400,
         f"Das Abmelden der Wallet von {HOUSE} wurde abgelehnt: Teilnehmer {HOUSE} hat keine "
         "registrierte Wallet.",
         f"Unregistering the wallet of {HOUSE} refused: participant {HOUSE} has no "
         "registered wallet."),
    ]
    for client, method, path, kwargs, status, german, english in cases:
        reply = in_german(client, way, method, path, **kwargs)
        assert (reply.status_code, reply.json()) == (status, {"error": german}), path
        reply = client.request(method, path, **kwargs)
        assert (reply.status_code, reply.json()) == (status, {"error": english}), path

    stranger = Account.create()
    message = anonymous.challenge(stranger)
    reply = in_german(anonymous, way, "POST", "/api/auth/verify",
                      json={"message": message, "signature": sign(stranger, message)})
    assert (reply.status_code, reply.json()) == (403, {"error": (
        f"Die Wallet {stranger.address} ist keinem Teilnehmer von "
        f"{world.target.net.settings.network_name} zugeordnet; bitten Sie {CONTACT}, sie zu "
        "registrieren.")})


def test_what_a_request_sends_is_never_read_as_a_template(portal_world: PortalWorld) -> None:
    """A value the API echoes in its sentence comes back exactly as sent, braces and all, in
    German and in English: the template is always ours, what someone typed only fills it (a
    value read as a template could name the error's other values or an object's
    attributes, or break the answer)."""
    world = portal_world
    alice, operator = signed_in(world, world.alice), signed_in(world, world.operator)
    sneaky = "{0.__class__}{wallet}{network!r}"
    cases = [
        (alice, "GET", f"/api/participants/{world.a}/trades",
         {"params": {"page": sneaky}},
         f"page muss eine ganze Zahl zwischen 1 und 2000000 sein, nicht {sneaky!r}.",
         f"page must be a whole number between 1 and 2000000, not {sneaky!r}."),
        (operator, "POST", "/api/operator/transactions/register",
         {"json": {"participant": HOUSE, "wallet": sneaky}},
         f"Die Angabe {sneaky!r} (Wallet) ist keine Ethereum-Adresse (0x und 40 "
         "Hexadezimalziffern, in gemischter Schreibung mit gültiger Prüfsumme).",
         f"The wallet {sneaky!r} is not an Ethereum address (0x and 40 hex digits, with a "
         "valid checksum if mixed case)."),
    ]
    for client, method, path, kwargs, german, english in cases:
        reply = in_german(client, "Accept-Language", method, path, **kwargs)
        assert (reply.status_code, reply.json()) == (400, {"error": german}), path
        reply = client.request(method, path, **kwargs)
        assert (reply.status_code, reply.json()) == (400, {"error": english}), path


# --- settings, without a chain -------------------------------------------------------------


@pytest.mark.parametrize("name, raw, sentence", [
    ("PORTAL_PAGE_SIZE", "501", "PORTAL_PAGE_SIZE must be at most 500, not 501."),
    ("PORTAL_BRIDGE_HEALTH_URL", "127.0.0.1:9108",
     "PORTAL_BRIDGE_HEALTH_URL must be an http:// or https:// URL"),
    ("PORTAL_DEAD_LETTERS_SHOWN", "501", "PORTAL_DEAD_LETTERS_SHOWN must be at most 500"),
    ("PORTAL_HEALTH_TIMEOUT", "0", "PORTAL_HEALTH_TIMEOUT must be at least 0.1"),
    ("PORTAL_PAGE_SIZE", "0", "PORTAL_PAGE_SIZE must be at least 1, not 0."),
    ("PORTAL_DOMAIN", "https://portal.example/", "PORTAL_DOMAIN must be a host name"),
    ("PORTAL_HOST", "0.0.0.0", "PORTAL_DOMAIN must be set when the portal listens on 0.0.0.0 "
                               "(PORTAL_HOST): sign-in messages name the address people reach "
                               "the portal at"),
    ("PORTAL_HOST", "portal.lan", "PORTAL_DOMAIN must be set when the portal listens on "
                                  "portal.lan"),
    ("PORTAL_CHALLENGES_PER_CLIENT", "0", "PORTAL_CHALLENGES_PER_CLIENT must be at least 1"),
    ("PORTAL_SECURE_COOKIES", "maybe", "PORTAL_SECURE_COOKIES must be true or false"),
])
def test_a_bad_web_setting_is_refused_by_name(name: str, raw: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as refused:
        WebSettings.from_env({name: raw})
    assert str(refused.value).startswith(sentence)


def test_the_portal_is_shown_at_localhost_where_secure_cookies_work() -> None:
    assert WebSettings.from_env({"PORTAL_PORT": "9300"}).url == "http://localhost:9300"
    lan = WebSettings.from_env({"PORTAL_HOST": "portal.lan", "PORTAL_DOMAIN": "portal.lan:9200"})
    assert lan.url == "http://portal.lan:9200"


@pytest.mark.parametrize("env, domain, uri", [
    # The native default: loopback, so localhost and the port; no setting needed.
    ({}, "localhost:9200", "http://localhost:9200/"),
    ({"PORTAL_HOST": "127.0.0.1", "PORTAL_PORT": "9300"}, "localhost:9300",
     "http://localhost:9300/"),
    # Compose: every interface, the domain set from PUBLIC_HOST.
    ({"PORTAL_HOST": "0.0.0.0", "PORTAL_DOMAIN": "localhost:9200"}, "localhost:9200",
     "http://localhost:9200/"),
    # Behind HTTPS (Secure cookies off localhost need it), and plain HTTP on a LAN.
    ({"PORTAL_HOST": "0.0.0.0", "PORTAL_DOMAIN": "Portal.Example.org"}, "portal.example.org",
     "https://portal.example.org/"),
    ({"PORTAL_HOST": "0.0.0.0", "PORTAL_DOMAIN": "pilot.lan:9200",
      "PORTAL_SECURE_COOKIES": "false"}, "pilot.lan:9200", "http://pilot.lan:9200/"),
])
def test_the_sign_in_domain_comes_from_the_configuration(env: dict[str, str], domain: str,
                                                         uri: str) -> None:
    settings = WebSettings.from_env(env)
    assert (settings.sign_in_domain, settings.sign_in_uri) == (domain, uri)


def test_the_health_urls_default_to_the_native_stacks_metrics_ports() -> None:
    settings = WebSettings()
    assert (settings.bridge_health_url, settings.ingest_health_url,
            settings.closer_health_url) == (f"{BridgeSettings().metrics_url}/health",
                                            f"{IngestSettings().metrics_url}/health",
                                            f"{CloserSettings().metrics_url}/health")


def test_the_stack_points_the_portal_at_the_ports_configured() -> None:
    env = {"BRIDGE_METRICS_PORT": "9208", "INGEST_METRICS_HOST": "0.0.0.0",
           "INGEST_MQTT_METRICS_PORT": "9411", "CLOSER_METRICS_PORT": "9312",
           "BRIDGE_STREAM": "gsy:trades", "INGEST_DEAD_LETTER_STREAM": "refused"}
    portal = WebSettings.from_env(with_health_urls(
        env, BridgeSettings.from_env(env), IngestSettings.from_env(env),
        CloserSettings.from_env(env), MqttSettings.from_env(env)))
    assert [w.url for w in portal.watched] == [
        "http://127.0.0.1:9208/health", "http://127.0.0.1:9110/health",
        "http://127.0.0.1:9411/health", "http://127.0.0.1:9312/health"]
    assert (portal.dead_letters.trades, portal.dead_letters.readings) == \
        ("gsy:trades:dead", "refused")
    explicit = {**env, "PORTAL_BRIDGE_HEALTH_URL": "http://bridge:9108/health"}
    assert with_health_urls(explicit, BridgeSettings(), IngestSettings(), CloserSettings())[
        "PORTAL_BRIDGE_HEALTH_URL"] == "http://bridge:9108/health"
