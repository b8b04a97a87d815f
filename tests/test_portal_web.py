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
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from eth_account import Account
from portal_fixtures import ENGINES
from portal_web_fixtures import CONTACT, EXPLORER, PortalClient, PortalWorld, sign

from pilotchain.errors import ConfigError
from pilotchain.trades import uuid_to_bytes32
from portal.siwe import parse_message
from portal.web import STALE
from portal.web.config import WebSettings


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


SENTENCES = {
    "expired": "The sign-in message has expired; sign in again.",
    "wrong domain": "The message asks to sign in to evil.example, not to",
    "wrong chain id": "The message is for chain 1, but this portal serves chain",
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


# --- privacy -------------------------------------------------------------------------------

OWN = ("bill", "trades", "slots", "statements", "bill.csv", "trades.csv", "slots.csv",
       "statements.csv")


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
        {(world.a, world.alice.address), (world.b, world.bob.address)}
    assert len(view["meters"]) == 1 and view["meters"][0]["participant"] == world.a
    assert view["totals"]["trades"] == len(world.records) + len(world.metered)
    # The operator sees every participant's data.
    assert operator.get(f"/api/participants/{world.b}/bill").json() == \
        bill_on_chain(world, world.b)


# --- settings, without a chain -------------------------------------------------------------


@pytest.mark.parametrize("name, raw, sentence", [
    ("PORTAL_PAGE_SIZE", "501", "PORTAL_PAGE_SIZE must be at most 500, not 501."),
    ("PORTAL_PAGE_SIZE", "0", "PORTAL_PAGE_SIZE must be at least 1, not 0."),
    ("PORTAL_DOMAIN", "https://portal.example/", "PORTAL_DOMAIN must be a host name"),
    ("PORTAL_SECURE_COOKIES", "maybe", "PORTAL_SECURE_COOKIES must be true or false"),
])
def test_a_bad_web_setting_is_refused_by_name(name: str, raw: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as refused:
        WebSettings.from_env({name: raw})
    assert str(refused.value).startswith(sentence)


def test_the_portal_is_shown_at_localhost_where_secure_cookies_work() -> None:
    assert WebSettings.from_env({"PORTAL_PORT": "9300"}).url == "http://localhost:9300"
    assert WebSettings.from_env({"PORTAL_HOST": "portal.lan"}).url == "http://portal.lan:9200"
