"""The faucet's metrics as deployed: real gunicorn (4 workers, prometheus_client's
multiprocess mode) on the session's chain, scraped on its own loopback port by promtool and by
a real Prometheus.

- Every worker's requests and claims are in one scrape (summed across the processes).
- The public port never serves ``/metrics``; the metrics port serves nothing else.
- Labels stay bounded whatever a client sends: a hundred made-up paths are one
  ``(unmatched)`` route, a made-up method is ``other``.
- The balance is the node's; below FAUCET_LOW_BALANCE a real Prometheus fires
  ``PilotChainFaucetBalanceLow`` (its ``for:`` cut to seconds).

The portal's are in test_portal_web.py (its world is expensive to build twice).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from bridge_fixtures import START_SECONDS
from eth_account import Account
from faucet_fixtures import UNIT, RunningFaucet, start_gunicorn_faucet
from prometheus_checks import FOR_SECONDS, Prometheus, assert_prometheus_text

from pilotchain.chain import wait_for
from pilotchain.webmetrics import UNMATCHED
from runner.localnet import LocalNetwork

pytestmark = pytest.mark.chain

HISTOGRAM = "pilotchain_http_request_duration_seconds"


def scrape(faucet: RunningFaucet) -> dict[str, float]:
    url = f"{faucet.service.settings.metrics_url}/metrics"
    return assert_prometheus_text(requests.get(url, timeout=30))


def requests_of(found: dict[str, float], route: str, method: str = "GET",
                status: str = "2xx") -> float:
    return found.get(f'{HISTOGRAM}_count{{method="{method}",route="{route}",'
                     f'status_class="{status}"}}', 0)


@pytest.fixture(scope="module")
def faucet(chain: LocalNetwork, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningFaucet]:
    """The faucet under gunicorn with a low-balance threshold above what it holds."""
    home = tmp_path_factory.mktemp("faucet-metrics")
    yield from start_gunicorn_faucet(chain, home, {"FAUCET_TRUSTED_PROXIES": "1",
                                                   "FAUCET_LOW_BALANCE": "100000000"})


def test_one_scrape_sums_every_workers_requests_and_claims(faucet: RunningFaucet) -> None:
    before = scrape(faucet)
    for _ in range(40):  # four workers of four threads: every worker answers some
        assert faucet.get("/api/info").status_code == 200
    granted = faucet.post("/api/claim", json={"address": Account.create().address},
                          headers={"X-Forwarded-For": "10.31.0.1"})
    assert granted.status_code == 200, granted.text
    again = faucet.post("/api/claim", json={"address": granted.json()["address"]},
                        headers={"X-Forwarded-For": "10.31.0.2"})
    assert again.status_code == 429
    wrong = faucet.post("/faucet/api/claim", json={"address": "0x12"},
                        headers={"X-Forwarded-For": "10.31.0.3"})
    assert wrong.status_code == 400

    found = scrape(faucet)
    assert requests_of(found, "/api/info") - requests_of(before, "/api/info") == 40
    assert requests_of(found, "/api/claim", "POST") - requests_of(before, "/api/claim",
                                                                  "POST") == 1
    assert requests_of(found, "/api/claim", "POST", "4xx") - requests_of(
        before, "/api/claim", "POST", "4xx") == 1
    assert requests_of(found, "/faucet/api/claim", "POST", "4xx") - requests_of(
        before, "/faucet/api/claim", "POST", "4xx") == 1
    counted = {name: found[name] - before.get(name, 0) for name in (
        "pilotchain_faucet_claims_granted_total",
        'pilotchain_faucet_claims_refused_total{reason="rate_limited"}',
        'pilotchain_faucet_claims_refused_total{reason="invalid_address"}',
        'pilotchain_faucet_claims_refused_total{reason="empty"}')}
    assert counted == {"pilotchain_faucet_claims_granted_total": 1,
                       'pilotchain_faucet_claims_refused_total{reason="rate_limited"}': 1,
                       'pilotchain_faucet_claims_refused_total{reason="invalid_address"}': 1,
                       'pilotchain_faucet_claims_refused_total{reason="empty"}': 0}
    # The balance is the node's (read at most every 5 s: within two claims' worth).
    balance = faucet.w3.eth.get_balance(faucet.address) / UNIT
    assert abs(found["pilotchain_faucet_balance_ether"] - balance) <= 2
    assert found["pilotchain_faucet_low_balance_ether"] == 100_000_000
    assert found["pilotchain_chain_connected"] == 1


def test_metrics_are_only_on_the_metrics_port_and_only_metrics_are_there(
        faucet: RunningFaucet) -> None:
    public = faucet.get("/metrics")
    assert public.status_code == 404
    assert HISTOGRAM not in public.text
    metrics = faucet.service.settings.metrics_url
    for path in ("/", "/api/info", "/metrics/", "/faucet"):
        answer = requests.get(f"{metrics}{path}", timeout=10)
        assert answer.status_code == 404, path
        assert answer.text == "Only /metrics is served on this port.\n"
    assert requests.post(f"{metrics}/metrics", timeout=10).status_code == 404
    # A Host header naming the metrics port changes nothing on the public one.
    port = faucet.service.settings.metrics_port
    assert faucet.get("/metrics", headers={"Host": f"127.0.0.1:{port}"}).status_code == 404


def test_labels_stay_bounded_whatever_clients_send(faucet: RunningFaucet) -> None:
    for index in range(100):
        assert faucet.get(f"/made-up/{index}?x={index}").status_code == 404
    assert faucet.record(requests.request("BREW", f"{faucet.url}/api/info",
                                          timeout=10)).status_code == 405
    found = scrape(faucet)
    routes = {name.split('route="')[1].split('"')[0] for name in found
              if name.startswith(f"{HISTOGRAM}_count")}
    assert not any("made-up" in route for route in routes), routes
    assert requests_of(found, UNMATCHED, status="4xx") >= 100
    # A method no route takes matches no route (405).
    assert requests_of(found, UNMATCHED, "other", "4xx") == 1
    methods = {name.split('method="')[1].split('"')[0] for name in found
               if name.startswith(f"{HISTOGRAM}_count")}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def workers(master: int) -> set[int]:
    """The gunicorn master's live child processes (its workers)."""
    found = set()
    for task in Path(f"/proc/{master}/task").iterdir():
        for child in (task / "children").read_text().split():
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found.add(int(child))
    return found


def test_a_killed_worker_is_replaced_and_no_total_falls(faucet: RunningFaucet) -> None:
    """Its counts stay in the sums (its files are kept); the replacement adds to them."""
    for _ in range(8):
        assert faucet.get("/api/info").status_code == 200
    before = scrape(faucet)
    master = faucet.service.process.pid
    assert master is not None
    old = workers(master)
    assert len(old) == 4
    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: (len(now := workers(master)) == 4 and victim not in now) or None,
             timeout=START_SECONDS, what="gunicorn to replace the killed worker")
    after = scrape(faucet)
    for name, value in before.items():
        if name.endswith(("_total", "_count", "_sum")) or "_bucket{" in name:
            assert after.get(name, 0) >= value, name
    assert requests_of(after, "/api/info") == requests_of(before, "/api/info")


def test_a_real_prometheus_scrapes_the_faucet_and_alerts_on_its_low_balance(
        faucet: RunningFaucet, tmp_path: Path) -> None:
    home = tmp_path / "prometheus"
    home.mkdir()
    target = faucet.service.settings.metrics_url.removeprefix("http://")
    prometheus = Prometheus(home, {"faucet": target})
    prometheus.start()
    try:
        wait_for(lambda: prometheus.value('up{job="faucet"}') == 1 or None,
                 timeout=START_SECONDS, what="Prometheus to scrape the faucet's metrics port")
        # A million units is below the threshold of a hundred million set for this test.
        wait_for(lambda: "PilotChainFaucetBalanceLow" in prometheus.firing() or None,
                 timeout=START_SECONDS,
                 what=f"PilotChainFaucetBalanceLow firing ({FOR_SECONDS} s after the balance "
                      "is below FAUCET_LOW_BALANCE)")
        assert prometheus.value("pilotchain_faucet_balance_ether") > 0
    finally:
        prometheus.stop()
