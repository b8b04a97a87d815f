"""The alerting rules (monitoring/alerts.yml) with Prometheus's own tools, and a real
Prometheus scraping a real bridge.

- ``promtool check rules`` and ``promtool test rules`` (monitoring/alerts.test.yml): every
  alert fires on the series that should raise it, after its ``for:``, and not on a healthy
  one.
- A real Prometheus (Debian's) scrapes a real bridge process settling trades on the real
  chain: its samples arrive; the bridge frozen (SIGSTOP: it holds its port and answers
  nothing), ``PilotChainServiceDown`` fires; thawed, it resolves. The rules are the shipped
  ones with each ``for:`` cut to seconds, so the test does not wait minutes (their timing is
  what the unit tests check).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

from pilotchain.chain import wait_for
from pilotchain.settings import PROJECT_ROOT
from runner.ports import free_port

MONITORING = PROJECT_ROOT / "monitoring"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_SECONDS = 1
FOR_SECONDS = 3


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=MONITORING)


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


class Prometheus:
    """Debian's prometheus on a free loopback port with its own data directory."""

    def __init__(self, home: Path, scrape: dict[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = (MONITORING / "alerts.yml").read_text()
        fast = re.sub(r"for: \d+m", f"for: {FOR_SECONDS}s", rules)
        (home / "alerts.yml").write_text(fast)
        config = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s",
                       "evaluation_interval": f"{SCRAPE_SECONDS}s"},
            "rule_files": [str(home / "alerts.yml")],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in scrape.items()],
        }
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = home / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.home / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.home / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ready, timeout=START_SECONDS, what=f"Prometheus ready at {self.url} "
                 f"(its log: {self.log})")

    def ready(self) -> bool | None:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=5).status_code == 200 or None
        except requests.RequestException:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=60)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> set[str]:
        answer = requests.get(f"{self.url}/api/v1/alerts", timeout=10)
        answer.raise_for_status()
        return {alert["labels"]["alertname"] for alert in answer.json()["data"]["alerts"]
                if alert["state"] == "firing"}


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
