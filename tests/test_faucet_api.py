"""The faucet's page and JSON API in-process (Flask's test client) against the session's
real chain and a real Redis: answers, limits, failures, CSRF and CORS.

Gunicorn, concurrency and the browser are in test_faucet_gunicorn.py and
test_faucet_browser.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bridge_fixtures import PERIOD, mined
from eth_account import Account
from faucet_fixtures import EXPLORER, UNIT, assert_no_key, faucet_env, nonce
from flask import Flask, Response
from flask.testing import FlaskClient
from limits import parse
from web3 import Web3

from faucet.addresses import (
    BAD_CHECKSUM,
    EMPTY,
    NO_PREFIX,
    NOT_HEX,
    NOT_TEXT,
    ZERO,
    missing_prefix,
    wrong_length,
)
from faucet.api import (
    ADD_KEY_TYPE,
    BROKEN_JSON,
    NO_ADDRESS,
    NO_PUBLIC_KEY,
    NOT_JSON,
    NOT_OBJECT,
    TOO_DEEP,
)
from faucet.app import create_app
from faucet.limits import STORE_DOWN, address_refusal, ip_refusal
from faucet.page import STALE_FORM
from faucet.wallet import UNREACHABLE, empty_sentence
from pilotchain.chain import Sender, connect, wait_for_blocks
from pilotchain.config import ChainSettings
from pilotchain.pages import HSTS, SECURITY_HEADERS
from runner.localnet import MINED_WITHIN, LocalNetwork
from runner.ports import free_port

pytestmark = pytest.mark.chain

MakeApp = Callable[..., Flask]


@pytest.fixture
def w3(chain: LocalNetwork) -> Web3:
    return connect(chain.rpc_url)


@pytest.fixture
def faucet_key(chain: LocalNetwork) -> bytes:
    return bytes(chain.keys.role("faucet").unlock().key)


@pytest.fixture
def make_app(chain: LocalNetwork, redis_url: str, tmp_path: Path, faucet_key: bytes,
             caplog: pytest.LogCaptureFixture) -> Iterator[MakeApp]:
    """Build faucet apps on the session chain and a freshly emptied Redis; afterwards, check
    that no answer and no log line of the test held the faucet's private key."""
    caplog.set_level("INFO")
    answers: list[bytes] = []
    keys = [faucet_key]

    def record(response: Response) -> Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        answers.append(headers.encode() + b"\n\n" + response.get_data())
        return response

    def make(**overrides: str) -> Flask:
        if "FAUCET_PRIVATE_KEY" in overrides:
            keys.append(bytes.fromhex(overrides["FAUCET_PRIVATE_KEY"].removeprefix("0x")))
        app = create_app(faucet_env(chain, redis_url, tmp_path, **overrides))
        app.after_request(record)
        return app

    yield make
    assert answers, "the test recorded no answer at all"
    # caplog.text would be this teardown's own (empty) capture: read the test's records.
    logged = "\n".join(record.getMessage() for phase in ("setup", "call")
                       for record in caplog.get_records(phase))
    if any(b'"tx_hash"' in answer for answer in answers):
        assert "Sent " in logged, "the log capture missed the claims: the check below is void"
    for key in keys:
        assert_no_key(key, *answers, where="a response")
        assert_no_key(key, logged, where="the log")


@pytest.fixture
def client(make_app: MakeApp) -> FlaskClient:
    return make_app().test_client()


def new_address() -> str:
    """A fresh checksummed address whose hex has letters (so case matters)."""
    while True:
        address = Account.create().address
        if re.search(r"[a-fA-F]", address[2:]):
            return address


def flip_case(address: str) -> str:
    """``address`` with the case of its first letter flipped: a broken EIP-55 checksum."""
    index = next(i for i, ch in enumerate(address) if i > 1 and ch.isalpha())
    return address[:index] + address[index].swapcase() + address[index + 1:]


def wait_for_balance(w3: Web3, address: str, amount: int) -> int:
    return wait_for_blocks(lambda: w3.eth.get_balance(address) == amount, w3=w3,
                           blocks=MINED_WITHIN, period=PERIOD,
                           what=f"{address} to hold {amount} wei",
                           why="the faucet's transfer goes into one of the next blocks")


# -- information -------------------------------------------------------------------------

def test_info_describes_the_network_the_balance_and_the_terms(client: FlaskClient,
                                                              chain: LocalNetwork) -> None:
    answer = client.get("/api/info")
    assert answer.status_code == 200
    info = answer.get_json()
    faucet = chain.keys.role("faucet").address
    assert info["faucet_address"] == faucet
    assert int(info["balance_wei"]) == connect(chain.rpc_url).eth.get_balance(faucet)
    assert info["amount"] == "1" and info["amount_wei"] == str(UNIT)
    assert info["address_limit"] == "1 claim every 24 hours"
    assert info["ip_limit"] == "10 claims every 24 hours"
    assert info["wait_between_claims"] == "24 hours"
    assert info["add_network_params"] == {
        "chainId": hex(chain.settings.chain_id),
        "chainName": chain.settings.network_name,
        "rpcUrls": [chain.rpc_url],
        "nativeCurrency": {"name": "PILOT", "symbol": "PILOT", "decimals": 18},
        "blockExplorerUrls": [EXPLORER],
    }
    assert client.get("/faucet/api/info").get_json()["faucet_address"] == faucet


# -- claims and limits -------------------------------------------------------------------

def test_a_claim_answers_once_the_node_accepted_it_and_funds_the_address(
        client: FlaskClient, w3: Web3) -> None:
    address = new_address()
    answer = client.post("/api/claim", json={"address": address.lower()})
    assert answer.status_code == 200
    body = answer.get_json()
    tx_hash = body["tx_hash"]
    assert body == {
        "message": f"Sent 1 PILOT to {address}.", "address": address, "amount": "1",
        "amount_wei": str(UNIT), "symbol": "PILOT", "tx_hash": tx_hash,
        "tx_url": f"{EXPLORER}/tx/{tx_hash}",
    }
    # Accepted, not necessarily mined: the node knows the transaction at once.
    tx = w3.eth.get_transaction(tx_hash)
    assert tx["to"] == address and tx["value"] == UNIT and tx["type"] == 2
    assert tx["maxFeePerGas"] > tx["maxPriorityFeePerGas"] > 0
    assert mined(w3, tx_hash)["status"] == 1
    assert w3.eth.get_balance(address) == UNIT


def test_a_second_claim_for_an_address_gets_429_with_retry_after(client: FlaskClient) -> None:
    address = new_address()
    assert client.post("/api/claim", json={"address": address}).status_code == 200
    # However it is spelled and whichever endpoint it comes through.
    for path, kwargs in [("/api/claim", {"json": {"address": address}}),
                         ("/api/claim", {"json": {"address": address.lower()}}),
                         ("/faucet/api/add_key", {"data": {"public_key": address}})]:
        answer = client.post(path, **kwargs)
        assert answer.status_code == 429
        wait = int(answer.headers["Retry-After"])
        assert 86_000 < wait <= 86_400
        assert answer.get_json() == {"error": address_refusal(parse("1 per 24 hours"), wait),
                                     "retry_after": wait}


def test_the_ip_limit_counts_the_client_behind_only_the_trusted_proxies(
        make_app: MakeApp) -> None:
    direct = make_app(FAUCET_IP_LIMIT="2 per hour").test_client()
    client_ip = {"REMOTE_ADDR": "10.0.0.1"}
    for _ in range(2):
        answer = direct.post("/api/claim", json={"address": new_address()},
                             environ_base=client_ip)
        assert answer.status_code == 200
    refused = direct.post("/api/claim", json={"address": new_address()}, environ_base=client_ip)
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert 3_500 < wait <= 3_600
    assert refused.get_json()["error"] == ip_refusal(parse("2 per hour"), wait)
    # Without trusted proxies X-Forwarded-For is ignored: a made-up header does not help.
    forged = direct.post("/api/claim", json={"address": new_address()}, environ_base=client_ip,
                         headers={"X-Forwarded-For": "10.0.0.99"})
    assert forged.status_code == 429
    assert direct.post("/api/claim", json={"address": new_address()},
                       environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200

    # Behind one trusted proxy the client is the last X-Forwarded-For entry; entries the
    # client wrote in front of it are not believed.
    proxied = make_app(FAUCET_IP_LIMIT="2 per hour", FAUCET_TRUSTED_PROXIES="1").test_client()
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    spoofed = proxied.post("/api/claim", json={"address": new_address()}, environ_base=proxy,
                           headers={"X-Forwarded-For": "10.0.0.77, 10.0.0.1"})
    assert spoofed.status_code == 429
    fresh = proxied.post("/api/claim", json={"address": new_address()}, environ_base=proxy,
                         headers={"X-Forwarded-For": "10.0.0.1, 10.0.0.3"})
    assert fresh.status_code == 200


def test_the_amount_and_limits_are_configurable(make_app: MakeApp, w3: Web3) -> None:
    client = make_app(FAUCET_AMOUNT="0.25", FAUCET_ADDRESS_LIMIT="2/day").test_client()
    address = new_address()
    first = client.post("/api/claim", json={"address": address}).get_json()
    assert first["amount"] == "0.25" and first["message"] == f"Sent 0.25 PILOT to {address}."
    assert client.post("/api/claim", json={"address": address}).status_code == 200
    assert client.post("/api/claim", json={"address": address}).status_code == 429
    wait_for_balance(w3, address, UNIT // 2)
    info = client.get("/api/info").get_json()
    assert info["address_limit"] == "2 claims a day" and info["wait_between_claims"] == "1 day"


# -- invalid input -----------------------------------------------------------------------

VALID = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own example
INVALID_REQUESTS = [
    ("bad checksum", "/api/claim", {"json": {"address": flip_case(VALID)}}, 400, BAD_CHECKSUM),
    ("too short", "/api/claim", {"json": {"address": VALID[:-2]}}, 400, wrong_length(38)),
    ("too long", "/api/claim", {"json": {"address": VALID + "00"}}, 400, wrong_length(42)),
    ("non-hex", "/api/claim", {"json": {"address": "0x" + "g" * 40}}, 400, NOT_HEX),
    ("empty", "/api/claim", {"json": {"address": ""}}, 400, EMPTY),
    ("blank", "/api/claim", {"json": {"address": "   "}}, 400, EMPTY),
    ("null", "/api/claim", {"json": {"address": None}}, 400, EMPTY),
    ("a number", "/api/claim", {"json": {"address": 42}}, 400, NOT_TEXT),
    ("no 0x", "/api/claim", {"json": {"address": VALID[2:]}}, 400, missing_prefix(VALID[2:])),
    ("a name", "/api/claim", {"json": {"address": "alice.eth"}}, 400, NO_PREFIX),
    ("zero address", "/api/claim", {"json": {"address": "0x" + "0" * 40}}, 400, ZERO),
    ("no address field", "/api/claim", {"json": {"wallet": VALID}}, 400, NO_ADDRESS),
    ("a JSON array", "/api/claim", {"json": [VALID]}, 400, NOT_OBJECT),
    ("broken JSON", "/api/claim",
     {"data": '{"address": "0x5a', "content_type": "application/json"}, 400, BROKEN_JSON),
    ("not UTF-8", "/api/claim",
     {"data": b'{"address": "\xff"}', "content_type": "application/json"}, 400, BROKEN_JSON),
    ("wrong content type", "/api/claim",
     {"data": json.dumps({"address": VALID}), "content_type": "text/plain"}, 400, NOT_JSON),
    ("a form to /api/claim", "/api/claim", {"data": {"address": VALID}}, 400, NOT_JSON),
    ("no content type", "/api/claim", {"data": json.dumps({"address": VALID})}, 400, NOT_JSON),
    ("oversized body", "/api/claim", {"json": {"address": VALID, "pad": "x" * 5000}}, 413,
     'The request body is larger than the 4096 bytes the faucet accepts; send only '
     '{"address": "0x..."}.'),
    ("add_key as text", "/api/add_key", {"data": VALID, "content_type": "text/plain"}, 400,
     ADD_KEY_TYPE),
    ("add_key without public_key", "/api/add_key", {"data": {"address": VALID}}, 400,
     NO_PUBLIC_KEY),
    ("add_key bad address", "/faucet/api/add_key", {"data": {"public_key": "0x123"}}, 400,
     wrong_length(3)),
    ("add_key broken JSON", "/api/add_key",
     {"data": "{", "content_type": "application/json"}, 400, BROKEN_JSON),
]


@pytest.mark.parametrize(("path", "kwargs", "status", "sentence"),
                         [case[1:] for case in INVALID_REQUESTS],
                         ids=[case[0] for case in INVALID_REQUESTS])
def test_invalid_input_gets_a_sentence_and_sends_nothing(
        client: FlaskClient, chain: LocalNetwork, w3: Web3, path: str, kwargs: dict,
        status: int, sentence: str) -> None:
    faucet = chain.keys.role("faucet").address
    before = nonce(w3, faucet)
    answer = client.post(path, **kwargs)
    assert answer.status_code == status
    assert answer.mimetype == "application/json"
    assert answer.get_json() == {"error": sentence}
    assert nonce(w3, faucet) == before


def test_the_faucets_own_address_is_refused(client: FlaskClient, chain: LocalNetwork) -> None:
    answer = client.post("/api/claim", json={"address": chain.keys.role("faucet").address})
    assert answer.status_code == 400
    assert answer.get_json() == {
        "error": "That is the faucet's own address; enter your wallet address."}


def test_invalid_attempts_use_no_quota(make_app: MakeApp) -> None:
    client = make_app(FAUCET_IP_LIMIT="1 per hour").test_client()
    address = new_address()
    for bad in (flip_case(address), address[:-1], address + "0"):
        assert client.post("/api/claim", json={"address": bad}).status_code == 400
    assert client.post("/api/claim", json={"address": address}).status_code == 200


def test_unknown_endpoints_and_methods_answer_json_sentences(client: FlaskClient) -> None:
    missing = client.get("/api/nothing")
    assert missing.status_code == 404
    assert missing.get_json()["error"].startswith("There is no such faucet endpoint")
    wrong = client.get("/api/claim")
    assert wrong.status_code == 405
    assert wrong.get_json() == {"error": "This endpoint does not accept GET requests."}


# -- the earlier pilot's clients ---------------------------------------------------------

@pytest.mark.parametrize("prefix", ["", "/faucet"])
@pytest.mark.parametrize("style", ["json", "form"])
def test_the_earlier_pilots_add_key_funds_the_address(client: FlaskClient, w3: Web3,
                                                      prefix: str, style: str) -> None:
    address = new_address()
    kwargs = {"json": {"public_key": address}} if style == "json" else {
        "data": {"public_key": address}}
    answer = client.post(f"{prefix}/api/add_key", **kwargs)
    assert answer.status_code == 200
    assert answer.get_json()["address"] == address
    wait_for_balance(w3, address, UNIT)


def test_the_path_prefix_is_configurable(make_app: MakeApp, w3: Web3) -> None:
    client = make_app(FAUCET_PATH_PREFIX="pilot/").test_client()
    address = new_address()
    assert client.post("/pilot/api/add_key", data={"public_key": address}).status_code == 200
    assert client.get("/pilot").status_code == 200
    assert client.post("/faucet/api/add_key", data={"public_key": address}).status_code == 404
    unprefixed = make_app(FAUCET_PATH_PREFIX="none").test_client()
    assert unprefixed.get("/faucet").status_code == 404
    wait_for_balance(w3, address, UNIT)


# -- failures that leave the quota untouched ---------------------------------------------

def test_an_empty_faucet_answers_503_and_the_claim_can_be_retried_at_once(
        make_app: MakeApp, chain: LocalNetwork, w3: Web3) -> None:
    """A real failed send (the node refuses: insufficient funds), then the same address
    from the same IP succeeds as soon as the faucet has money again."""
    empty = Account.create()
    client = make_app(FAUCET_PRIVATE_KEY=empty.key.hex(), FAUCET_IP_LIMIT="1 per hour",
                      FAUCET_AMOUNT="0.001").test_client()
    address = new_address()
    for _ in range(2):  # the first failure used no quota, so the second is not a 429
        answer = client.post("/api/claim", json={"address": address})
        assert answer.status_code == 503
        assert answer.get_json() == {"error": empty_sentence(empty.address)}
    assert nonce(w3, empty.address) == 0

    top_up = Sender(w3, chain.keys.role("operator").unlock(), url=chain.rpc_url)
    receipt = mined(w3, top_up.send({"to": empty.address, "value": UNIT,
                                                "gas": 21_000}))
    assert receipt["status"] == 1
    answer = client.post("/api/claim", json={"address": address})
    assert answer.status_code == 200, answer.get_json()
    wait_for_balance(w3, address, UNIT // 1000)
    assert client.get("/").status_code == 200  # the page, too, is checked for the key


def test_an_unreachable_chain_answers_503_and_uses_no_quota(make_app: MakeApp,
                                                            w3: Web3) -> None:
    stopped_rpc = f"http://127.0.0.1:{free_port()}"
    down = make_app(RPC_URL=stopped_rpc, FAUCET_IP_LIMIT="1 per hour").test_client()
    address = new_address()
    answer = down.post("/api/claim", json={"address": address})
    assert answer.status_code == 503
    assert answer.get_json() == {"error": UNREACHABLE}
    info = down.get("/api/info")
    assert info.status_code == 503 and info.get_json() == {"error": UNREACHABLE}
    page = down.get("/")
    assert page.status_code == 200
    assert UNREACHABLE in page.get_data(as_text=True)
    assert "Add network to MetaMask" in page.get_data(as_text=True)

    # The same address from the same IP, once the chain answers again (same Redis).
    up = make_app(FAUCET_IP_LIMIT="1 per hour").test_client()
    assert up.post("/api/claim", json={"address": address}).status_code == 200
    wait_for_balance(w3, address, UNIT)


def test_an_unreachable_redis_answers_503(make_app: MakeApp, chain: LocalNetwork,
                                          w3: Web3) -> None:
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    faucet = chain.keys.role("faucet").address
    before = nonce(w3, faucet)
    answer = client.post("/api/claim", json={"address": new_address()})
    assert answer.status_code == 503
    assert answer.get_json() == {"error": STORE_DOWN}
    assert nonce(w3, faucet) == before


# -- cross-origin ------------------------------------------------------------------------

def test_cors_is_open_only_to_configured_origins_and_only_on_the_api(make_app: MakeApp) -> None:
    client = make_app(FAUCET_CORS_ORIGINS="https://wallet.example, http://localhost:3000"
                      ).test_client()
    allowed = {"Origin": "https://wallet.example"}
    answer = client.get("/api/info", headers=allowed)
    assert answer.headers["Access-Control-Allow-Origin"] == "https://wallet.example"
    assert "Origin" in answer.headers["Vary"]
    preflight = client.options("/api/claim", headers={
        **allowed, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://wallet.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "Content-Type"
    # Error answers carry it too, so a web app can show the sentence.
    refused = client.post("/api/claim", json={"address": "0x12"}, headers=allowed)
    assert refused.status_code == 400
    assert refused.headers["Access-Control-Allow-Origin"] == "https://wallet.example"

    other = client.get("/api/info", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in client.get("/", headers=allowed).headers
    closed = make_app().test_client().get("/api/info", headers=allowed)
    assert "Access-Control-Allow-Origin" not in closed.headers


# -- headers and links (issue 19) --------------------------------------------------------

ANSWERS = (("GET", "/", None), ("GET", "/faucet", None), ("GET", "/api/info", None),
           ("GET", "/faucet/api/info", None), ("POST", "/api/claim", {"address": "0x12"}),
           ("GET", "/api/nothing", None), ("GET", "/api/claim", None), ("GET", "/nothing", None),
           ("GET", "/static/faucet.js", None))


def test_every_answer_carries_the_security_headers(client: FlaskClient) -> None:
    """The page's, the API's (JSON, errors) and the static files': none can be framed or
    sniffed; HSTS only over HTTPS."""
    for method, path, body in ANSWERS:
        answer = client.open(path, method=method, json=body)
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (method, path, name)
        assert "Strict-Transport-Security" not in answer.headers, path


def test_hsts_only_over_https(make_app: MakeApp) -> None:
    direct = make_app().test_client()
    assert direct.get("/api/info", base_url="https://faucet.example"
                      ).headers["Strict-Transport-Security"] == HSTS
    # Behind a trusted TLS-terminating proxy that says so; a client's own claim is ignored.
    proxied = make_app(FAUCET_TRUSTED_PROXIES="1").test_client()
    assert proxied.get("/api/info", headers={"X-Forwarded-Proto": "https"}
                       ).headers["Strict-Transport-Security"] == HSTS
    assert "Strict-Transport-Security" not in direct.get(
        "/api/info", headers={"X-Forwarded-Proto": "https"}).headers


def test_without_an_explorer_nothing_links_to_one(make_app: MakeApp, w3: Web3) -> None:
    """The native stack runs no explorer: EXPLORER_URL is unset by default, and then no
    answer or page carries a link that leads nowhere."""
    assert ChainSettings().explorer_url == ""
    client = make_app(EXPLORER_URL="").test_client()
    info = client.get("/api/info").get_json()
    assert info["explorer_url"] is None
    assert "blockExplorerUrls" not in info["add_network_params"]
    address = new_address()
    claim = client.post("/api/claim", json={"address": address}).get_json()
    assert claim["tx_url"] is None and claim["tx_hash"].startswith("0x")
    page = client.get("/").get_data(as_text=True)
    assert "Block explorer" not in page and "/tx/" not in page
    wait_for_balance(w3, address, UNIT)


def test_a_deeply_nested_body_is_a_400(client: FlaskClient) -> None:
    """As deep as FAUCET_MAX_BODY_BYTES allows: a 400 with a sentence, whatever the parser's
    recursion limit."""
    deep = "[" * 2_000 + "]" * 2_000
    answer = client.post("/api/claim", data=deep, content_type="application/json")
    assert answer.status_code == 400
    assert answer.get_json()["error"] in (NOT_OBJECT, TOO_DEEP)


# -- the page without JavaScript ---------------------------------------------------------

def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the form has no CSRF token"
    return match.group(1)


@pytest.mark.parametrize("path", ["/", "/faucet"])
def test_the_form_works_as_a_plain_post(client: FlaskClient, w3: Web3, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Send me 1 PILOT" in html and 'id="balance"' in html
    assert '<dd id="address-limit">1 claim every 24 hours</dd>' in html
    assert '<dd id="ip-limit">10 claims every 24 hours</dd>' in html
    assert '<dd id="wait">24 hours per address</dd>' in html
    assert re.search(r'<dd id="balance">[\d,]+(\.\d{1,4})? PILOT</dd>', html)
    assert "Content-Security-Policy" in page.headers
    address = new_address()
    posted = client.post(path, data={"csrf_token": csrf_token(html), "address": address})
    assert posted.status_code == 200
    result = posted.get_data(as_text=True)
    tx_hash = re.search(r'id="tx-hash">(0x[0-9a-f]{64})<', result).group(1)
    assert f'href="{EXPLORER}/tx/{tx_hash}"' in result
    assert f"Sent 1 PILOT to {address}." in result
    assert mined(w3, tx_hash)["status"] == 1

    again = client.post(path, data={"csrf_token": csrf_token(result), "address": address})
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 86_000
    assert "This address has already received test funds" in again.get_data(as_text=True)


def test_the_form_shows_the_error_and_keeps_the_address(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    answer = client.post("/", data={"csrf_token": csrf_token(html), "address": "0x12zz"})
    assert answer.status_code == 400
    text = answer.get_data(as_text=True)
    assert f'<div class="notice error" role="alert" id="error">\n        <p>{NOT_HEX}</p>' in text
    assert 'value="0x12zz"' in text and 'aria-invalid="true"' in text


def test_the_form_refuses_posts_without_its_csrf_token(client: FlaskClient,
                                                       chain: LocalNetwork, w3: Web3) -> None:
    faucet = chain.keys.role("faucet").address
    before = nonce(w3, faucet)
    client.get("/")
    for token in (None, "forged"):
        data = {"address": new_address()} | ({"csrf_token": token} if token else {})
        answer = client.post("/", data=data)
        assert answer.status_code == 400
        assert STALE_FORM in answer.get_data(as_text=True)
    assert nonce(w3, faucet) == before


# -- contracts and the wrong chain -------------------------------------------------------

def deploy_runtime(chain: LocalNetwork, w3: Web3, runtime: str) -> str:
    """Deploy a one-byte contract: ``00`` (STOP) accepts any transfer, ``fe`` refuses all."""
    init_code = f"0x60{runtime}60005360016000f3"  # MSTORE8 the byte, RETURN it
    sender = Sender(w3, chain.keys.role("operator").unlock(), url=chain.rpc_url)
    receipt = mined(w3, sender.send({"data": init_code, "gas": 100_000}))
    assert receipt["status"] == 1
    return receipt["contractAddress"]


def test_contract_recipients_get_estimated_gas_or_a_sentence(client: FlaskClient,
                                                             chain: LocalNetwork,
                                                             w3: Web3) -> None:
    accepting = deploy_runtime(chain, w3, "00")
    answer = client.post("/api/claim", json={"address": accepting})
    assert answer.status_code == 200
    assert mined(w3, answer.get_json()["tx_hash"])["status"] == 1
    assert w3.eth.get_balance(accepting) == UNIT

    refusing = deploy_runtime(chain, w3, "fe")
    faucet = chain.keys.role("faucet").address
    before = nonce(w3, faucet)
    refused = client.post("/api/claim", json={"address": refusing})
    assert refused.status_code == 400
    assert refused.get_json() == {"error": "This address is a contract that does not accept "
                                           "plain transfers of PILOT; enter a wallet address "
                                           "instead."}
    assert nonce(w3, faucet) == before
    # The refusal used no quota: asking again gets the same sentence, not a 429.
    assert client.post("/api/claim", json={"address": refusing}).status_code == 400


def test_a_node_of_another_chain_is_refused(make_app: MakeApp, chain: LocalNetwork) -> None:
    client = make_app(CHAIN_ID="4242").test_client()
    answer = client.post("/api/claim", json={"address": new_address()})
    assert answer.status_code == 503
    assert answer.get_json() == {
        "error": f"The faucet is misconfigured: its node serves chain {chain.settings.chain_id}, "
                 "not chain 4242 (CHAIN_ID); nothing was sent."}
