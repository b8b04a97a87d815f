"""The alerting rules (monitoring/alerts.yml) with Prometheus's own tools, and a real
Prometheus alerting on real processes.

- ``promtool check rules`` and ``promtool test rules`` (monitoring/alerts.test.yml): every
  alert fires on the series that should raise it, after its ``for:``, and not on a healthy
  one.
- A real Prometheus (Debian's) scrapes a real bridge process settling trades on the real
  chain: its samples arrive; the bridge frozen (SIGSTOP: it holds its port and answers
  nothing), ``PilotChainServiceDown`` fires; thawed, it resolves.
- It scrapes ``pilotchain network exporter`` reading a private three-signer network: a
  validator stopped, ``PilotChainSignerNotSealing`` fires for its signer (and
  ``PilotChainSignersAtMajority``: one more down halts the chain); started again, both resolve.

The live tests load the shipped rules with each ``for:`` cut to seconds, so they do not wait
minutes (their timing is what the unit tests check).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from bridge_fixtures import (
    START_SECONDS,
    BridgeProcess,
    Deployed,
    bridge_settings,
    publish_lines,
    synthesise,
    wait_for_work,
    work_progress,
)
from conftest import NetworkFactory
from eth_utils.address import to_checksum_address
from prometheus_checks import (
    FOR_SECONDS,
    MONITORING,
    PROMTOOL,
    Prometheus,
    assert_prometheus_text,
    geth_problems,
    samples,
)

from pilotchain.chain import wait_for
from pilotchain.settings import PROJECT_ROOT
from runner.localnet import LocalNetwork
from runner.monitoring import GETH_METRICS_PATH
from runner.ports import free_port


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=MONITORING)


# What a stopped validator raises: it seals no more, the margin to a halt is gone, and
# Prometheus no longer reaches the node itself.
STOPPED_ALERTS = {"PilotChainSignerNotSealing", "PilotChainSignersAtMajority",
                  "PilotChainNodeDown"}


def test_the_rules_are_valid_and_every_alert_passes_its_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = promtool("check", "config", "prometheus.yml")  # the native stack's
    assert config.returncode == 0, config.stdout + config.stderr
    # Every alert of the rules has a test that expects it to fire.
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    fired = {case["alertname"] for test in tests["tests"]
             for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts == fired, alerts ^ fired


def test_the_unit_tests_fail_when_a_rule_is_weakened(tmp_path: Path) -> None:
    """The unit tests are not blind: a higher lag threshold and a longer ``for:`` each
    make them fail."""
    for old, new in (("> 1000 or", "> 5000 or"), ("for: 1m", "for: 3m")):
        rules = (MONITORING / "alerts.yml").read_text()
        assert old in rules
        (tmp_path / "alerts.yml").write_text(rules.replace(old, new))
        shutil.copy(MONITORING / "alerts.test.yml", tmp_path)
        done = subprocess.run([PROMTOOL, "test", "rules", "alerts.test.yml"],
                              capture_output=True, text=True, timeout=120, check=False,
                              cwd=tmp_path)
        assert done.returncode != 0, (old, new)


@pytest.fixture
def bridge(deployed: Deployed, redis_url: str, tmp_path: Path) -> Iterator[BridgeProcess]:
    process = BridgeProcess(bridge_settings(deployed, redis_url), tmp_path / "bridge.log")
    process.start()
    try:
        yield process
    finally:
        if process.process is not None and process.process.poll() is None:
            process.process.send_signal(signal.SIGCONT)
        process.stop()


@pytest.fixture
def prometheus(bridge: BridgeProcess, tmp_path: Path) -> Iterator[Prometheus]:
    home = tmp_path / "prometheus"
    home.mkdir()
    server = Prometheus(home, {"bridge": f"127.0.0.1:{bridge.settings.metrics_port}"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_real_prometheus_scrapes_the_bridge_and_alerts_when_it_stops_answering(
        deployed: Deployed, redis_url: str, bridge: BridgeProcess,
        prometheus: Prometheus) -> None:
    lines = synthesise(30, seed=11)
    publish_lines(redis_url, lines)
    wait_for_work(deployed.net, lambda: (bridge.metrics() or {}).get("settled") == 30 or None,
                  progress=work_progress(bridge.metrics), what="the bridge to settle 30 trades")
    # Prometheus's view equals the bridge's own, and nothing fires while all is well.
    wait_for(lambda: prometheus.value('pilotchain_entries_settled_total{job="bridge"}') == 30
             or None, timeout=START_SECONDS,
             what="Prometheus to scrape the bridge's 30 settled trades")
    assert prometheus.value('up{job="bridge"}') == 1
    assert prometheus.value('pilotchain_service_healthy{job="bridge"}') == 1
    assert prometheus.value('pilotchain_entry_latency_seconds_count{job="bridge"}') == 30
    assert prometheus.firing() == set()

    assert bridge.process is not None
    bridge.process.send_signal(signal.SIGSTOP)  # up, holding its port, answering nothing
    try:
        wait_for(lambda: "PilotChainServiceDown" in prometheus.firing() or None,
                 timeout=START_SECONDS,
                 what=f"PilotChainServiceDown firing ({FOR_SECONDS} s after the scrapes fail)")
    finally:
        bridge.process.send_signal(signal.SIGCONT)
    wait_for(lambda: "PilotChainServiceDown" not in prometheus.firing() or None,
             timeout=START_SECONDS, what="PilotChainServiceDown resolved once the bridge "
                                         "answers again")
    assert prometheus.value('up{job="bridge"}') == 1


@pytest.fixture
def exporter(make_network: NetworkFactory, tmp_path: Path
             ) -> Iterator[tuple[LocalNetwork, int]]:
    """A private three-signer network and ``pilotchain network exporter`` reading its RPC
    node over IPC, as a real process."""
    net = make_network()
    port = free_port()
    log = tmp_path / "exporter.log"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PILOTCHAIN_HOME": str(tmp_path),
           "PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "network", "exporter",
             "--ipc", str(net.ipc_path("rpc")), "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    try:
        wait_for(lambda: (process.poll() is None and "Serving" in log.read_text()) or None,
                 timeout=START_SECONDS, what=f"the exporter to serve (its log: {log})")
        yield net, port
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_a_real_prometheus_alerts_when_a_validator_stops_sealing_and_resolves_when_it_returns(
        exporter: tuple[LocalNetwork, int], tmp_path: Path) -> None:
    net, port = exporter
    found = assert_prometheus_text(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30))
    assert (found["pilotchain_node_reachable"], found["pilotchain_clique_signers"],
            found["pilotchain_clique_signers_needed"]) == (1, 3, 2)
    # geth's own metrics on every node, each on its own loopback port.
    geth = net.metrics_targets()
    assert sorted(geth) == ["rpc", "validator1", "validator2", "validator3"]
    assert len(set(geth.values())) == 4
    for node, target in geth.items():
        answer = requests.get(f"http://{target}{GETH_METRICS_PATH}", timeout=30)
        assert answer.status_code == 200, (node, answer.text[:300])
        assert geth_problems(answer.text) == "", node
        parsed = samples(answer.text)  # prometheus_client's parser reads all of it
        assert parsed["chain_head_block"] >= 1, node
    home = tmp_path / "prometheus"
    home.mkdir()
    prometheus = Prometheus(home, {"sealing": f"127.0.0.1:{port}"}, geth)
    prometheus.start()
    try:
        wait_for(lambda: len(prometheus.query('up{job="geth"} == 1')) == 4 or None,
                 timeout=START_SECONDS, what="Prometheus to scrape all four geth nodes")
        assert {series["metric"]["node"] for series in prometheus.query(
            'chain_head_block{job="geth"} >= 1')} == set(geth)
        wait_for(lambda: prometheus.value('pilotchain_clique_signers_sealing{job="sealing"}')
                 == 3 or None, timeout=START_SECONDS,
                 what="Prometheus to see three signers sealing")
        assert prometheus.value("pilotchain_clique_signers_needed") == 2
        assert prometheus.value("pilotchain_node_reachable") == 1
        assert prometheus.firing() == set()
        stopped = to_checksum_address(net.keys.role("validator1").address)
        assert net.stop_node("validator1")
        try:
            # 2N+2 = 8 blocks without it (about 8 periods), then the cut `for:`.
            wait_for(lambda: STOPPED_ALERTS <= prometheus.firing() or None,
                     timeout=START_SECONDS,
                     what="the signer, margin and node alerts firing for the stopped validator")
            silent = prometheus.query("pilotchain_clique_signer_sealing == 0")
            assert [series["metric"]["signer"] for series in silent] == [stopped]
            down = prometheus.query('ALERTS{alertname="PilotChainNodeDown", alertstate="firing"}')
            assert [series["metric"]["node"] for series in down] == ["validator1"]
        finally:
            net.start_node("validator1")
        wait_for(lambda: not prometheus.firing() & STOPPED_ALERTS or None,
                 timeout=START_SECONDS, what="the three alerts resolved once validator1 seals "
                                             "again")
    finally:
        prometheus.stop()
