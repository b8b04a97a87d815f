"""The faucet as deployed: real gunicorn with 4 workers (started by FaucetService), the
session's real Clique network and its own real Redis.

Client IPs are chosen with X-Forwarded-For, which this faucet trusts for one proxy.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from eth_account import Account
from faucet_fixtures import (  # type: ignore[no-redef]
    UNIT,
    RunningFaucet,
    assert_no_key,
    faucet_env,
    nonce,
    wait_for_empty_pool,
)
from limits import parse

from faucet.api import BROKEN_JSON, NOT_JSON
from faucet.config import FaucetSettings
from faucet.limits import address_refusal, ip_refusal
from pilotchain.errors import PilotChainError
from pilotchain.pages import SECURITY_HEADERS
from runner.faucet import FaucetService
from runner.ports import free_port

pytestmark = pytest.mark.chain

CONCURRENT_CLAIMS = 200


@pytest.fixture(scope="module")
def faucet(gunicorn_faucet: RunningFaucet) -> Iterator[RunningFaucet]:
    """The module's faucet; at the end, its key must be in no answer and no log line."""
    yield gunicorn_faucet
    assert gunicorn_faucet.answers
    assert_no_key(gunicorn_faucet.key, *gunicorn_faucet.answers, where="a response")
    assert_no_key(gunicorn_faucet.key, gunicorn_faucet.log_text(), where="the gunicorn log")


def claim_all_at_once(faucet: RunningFaucet, addresses: list[str]
                      ) -> list[requests.Response]:
    """POST /api/claim for every address at the same moment, each from its own IP."""
    answers: list[requests.Response | None] = [None] * len(addresses)
    start = threading.Barrier(len(addresses))

    def claim(index: int) -> None:
        start.wait(timeout=60)
        answers[index] = faucet.post(
            "/api/claim", json={"address": addresses[index]},
            headers={"X-Forwarded-For": f"10.20.{index // 200}.{index % 200 + 1}"})

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(addresses))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)  # 200 claims on 4 workers of a loaded machine
    assert all(answer is not None for answer in answers), "a claim got no answer"
    return answers  # type: ignore[return-value]


def test_service_reports_its_url_and_does_not_start_twice(faucet: RunningFaucet) -> None:
    assert faucet.service.status() == {
        "faucet_url": faucet.url,
        "faucet_metrics_url": f"{faucet.service.settings.metrics_url}/metrics"}
    assert faucet.service.start() is False
    assert faucet.get("/api/info").status_code == 200


def test_200_concurrent_claims_fund_each_address_exactly_once(faucet: RunningFaucet) -> None:
    w3 = faucet.w3
    before = nonce(w3, faucet.address)
    addresses = [Account.create().address for _ in range(CONCURRENT_CLAIMS)]
    answers = claim_all_at_once(faucet, addresses)

    assert Counter(a.status_code for a in answers) == {200: CONCURRENT_CLAIMS}, \
        [a.json() for a in answers if a.status_code != 200][:3]
    hashes = [a.json()["tx_hash"] for a in answers]
    assert len(set(hashes)) == CONCURRENT_CLAIMS
    assert [a.json()["address"] for a in answers] == addresses

    wait_for_empty_pool(w3)
    assert nonce(w3, faucet.address) == before + CONCURRENT_CLAIMS
    assert all(w3.eth.get_balance(address) == UNIT for address in addresses)
    receipts = [w3.eth.get_transaction_receipt(tx_hash) for tx_hash in hashes]
    assert all(receipt["status"] == 1 for receipt in receipts)
    assert "nonce" not in faucet.log_text().decode().lower()


def test_repeated_claims_per_address_and_per_ip_get_429_with_retry_after(
        faucet: RunningFaucet) -> None:
    address = Account.create().address
    first = faucet.post("/api/claim", json={"address": address},
                        headers={"X-Forwarded-For": "10.30.0.1"})
    assert first.status_code == 200
    again = faucet.post("/api/claim", json={"address": address},
                        headers={"X-Forwarded-For": "10.30.0.2"})
    assert again.status_code == 429
    wait = int(again.headers["Retry-After"])
    assert 86_000 < wait <= 86_400
    assert again.json()["error"] == address_refusal(parse("1 per 24 hours"), wait)

    ip = {"X-Forwarded-For": "10.30.0.3"}
    for _ in range(10):
        assert faucet.post("/api/claim", json={"address": Account.create().address},
                           headers=ip).status_code == 200
    refused = faucet.post("/api/claim", json={"address": Account.create().address}, headers=ip)
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert refused.json()["error"] == ip_refusal(parse("10 per 24 hours"), wait)
    # Only the last X-Forwarded-For entry is believed (one trusted proxy).
    spoofed = faucet.post("/api/claim", json={"address": Account.create().address},
                          headers={"X-Forwarded-For": "10.99.99.99, 10.30.0.3"})
    assert spoofed.status_code == 429


def test_the_earlier_pilots_exact_requests_fund_the_address(faucet: RunningFaucet) -> None:
    url = faucet.url
    form_address, json_address = Account.create().address, Account.create().address
    # As the earlier pilot's seed and clients call it, through the recording helper.
    form = faucet.record(requests.post(url + "/faucet/api/add_key",
                                       data={"public_key": form_address},
                                       headers={"X-Forwarded-For": "10.40.0.1"}, timeout=60))
    as_json = faucet.record(requests.post(url + "/faucet/api/add_key",
                                          json={"public_key": json_address},
                                          headers={"X-Forwarded-For": "10.40.0.2"}, timeout=60))
    assert form.status_code == 200 and as_json.status_code == 200
    w3 = faucet.w3
    wait_for_empty_pool(w3)
    assert w3.eth.get_balance(form_address) == UNIT
    assert w3.eth.get_balance(json_address) == UNIT


def test_invalid_requests_over_http_get_400_or_413_and_send_nothing(
        faucet: RunningFaucet) -> None:
    before = nonce(faucet.w3, faucet.address)
    broken = faucet.post("/api/claim", data='{"address": ',
                         headers={"Content-Type": "application/json"})
    assert (broken.status_code, broken.json()) == (400, {"error": BROKEN_JSON})
    text = faucet.post("/api/claim", data="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    assert (text.status_code, text.json()) == (400, {"error": NOT_JSON})

    def chunks() -> Iterator[bytes]:
        # Chunked, so no Content-Length announces the size up front.
        yield b'{"address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "pad": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    for body in (b"x" * 100_000, chunks()):
        # Connection: close, as the answer comes before the body is read: a kept-alive
        # connection would hold a gunicorn thread (and its shutdown) until the client leaves.
        oversized = faucet.post("/api/claim", data=body,
                                headers={"Content-Type": "application/json",
                                         "Connection": "close"})
        assert oversized.status_code == 413
        assert oversized.json()["error"].startswith("The request body is larger than the 4096")
    assert nonce(faucet.w3, faucet.address) == before


def test_answers_name_no_server_and_carry_the_security_headers(faucet: RunningFaucet) -> None:
    """gunicorn announces itself in a Server header unless told not to (pilotchain.pages)."""
    for answer in (faucet.get("/"), faucet.get("/api/info"), faucet.get("/api/nothing"),
                   faucet.post("/api/claim", json={"address": "0x12"})):
        assert "Server" not in answer.headers, answer.headers.get("Server")
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.url, name)


def test_the_service_reports_why_the_faucet_did_not_start(chain, tmp_path) -> None:
    env = faucet_env(chain, "redis://127.0.0.1:1/0", tmp_path, FAUCET_PORT=str(free_port()),
                     FAUCET_WORKERS="1", FAUCET_PRIVATE_KEY="not-a-key")
    service = FaucetService(FaucetSettings.from_env(env), tmp_path / "pids", env)
    try:
        with pytest.raises(PilotChainError) as error:
            service.start()
        assert str(error.value).startswith("The faucet exited while starting. End of its log:")
        assert "FAUCET_PRIVATE_KEY is not a private key" in str(error.value)
        assert "not-a-key" not in service.log_file.read_text()
    finally:
        service.stop()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["FAUCET_PORT"] = str(port)
        busy = FaucetService(FaucetSettings.from_env(env), tmp_path / "pids", env)
        with pytest.raises(PilotChainError) as error:
            busy.start()
    assert str(error.value) == (f"Port {port} on 127.0.0.1 is already in use by another "
                                "program; stop it or choose another port with FAUCET_PORT in .env.")
