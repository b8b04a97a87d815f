"""Checks of a ``/metrics`` answer with Prometheus's own tools: promtool's parser and linter
(``promtool check metrics``, Debian's prometheus package, installed by ./scripts/test), and
the client library's parser for the values."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml
from bridge_fixtures import START_SECONDS
from prometheus_client.parser import text_string_to_metric_families

from pilotchain.chain import wait_for
from pilotchain.settings import PROJECT_ROOT
from runner.monitoring import scrape_configs
from runner.ports import free_port

MONITORING = PROJECT_ROOT / "monitoring"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_SECONDS = 1
# The shipped rules' `for:` cut to this in the live tests (their timing is the unit tests').
FOR_SECONDS = 3


def promtool_problems(text: str) -> str:
    """What ``promtool check metrics`` says of ``text`` (empty when it parses and lints
    clean: counters end in _total, every family has HELP and TYPE, units in base names)."""
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, check=False)
    return "" if done.returncode == 0 else (done.stdout + done.stderr).strip()


def geth_problems(text: str) -> str:
    """What ``promtool check metrics`` says of geth's own exposition beyond its lint rules,
    which geth 1.13 does not follow (no HELP on its ~570 families, counters without
    ``_total``, gauges named ``..._count``, a counter named ``..._counter``): a parse error
    is kept; the lint lines are not."""
    lint = ("no help text", "counter metrics should have \"_total\" suffix",
            "non-histogram and non-summary metrics should not have",
            "non-counter metrics should not have \"_total\" suffix",
            "metric name should not include type", "should have a unit",
            "metric names should be written in")
    return "\n".join(line for line in promtool_problems(text).splitlines()
                     if not any(rule in line for rule in lint))


def samples(text: str) -> dict[str, float]:
    """Every sample of ``text`` by its name and labels, e.g. ``pilotchain_service_state
    {state="running"}``."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def assert_prometheus_text(answer: requests.Response) -> dict[str, float]:
    """``answer`` is a clean Prometheus text exposition; its samples."""
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4"), \
        answer.headers
    assert promtool_problems(answer.text) == ""
    return samples(answer.text)


class Prometheus:
    """Debian's prometheus on a free loopback port with its own data directory."""

    def __init__(self, home: Path, scrape: dict[str, str],
                 geth: Mapping[str, str] | None = None) -> None:
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
            # As ./scripts/up --monitoring writes them: geth's nodes as the job "geth".
            "scrape_configs": scrape_configs(scrape, geth or {}),
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
