"""``./scripts/up --monitoring``: the sealing exporter and Debian's Prometheus beside the
native stack, on loopback, scraping every service with metrics and loading
monitoring/alerts.yml (docs/monitoring.md)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from pilotchain.config import ChainSettings
from pilotchain.settings import PROJECT_ROOT
from runner.localnet import RPC_NODE, LocalNetwork
from runner.services import BackgroundService, ServiceError

ALERTS = PROJECT_ROOT / "monitoring" / "alerts.yml"
LOOPBACK = "127.0.0.1"
SCRAPE_INTERVAL = "15s"
# Where geth 1.13 serves its metrics in Prometheus's format (--metrics).
GETH_METRICS_PATH = "/debug/metrics/prometheus"


def scrape_configs(targets: Mapping[str, str], geth: Mapping[str, str]) -> list[dict[str, Any]]:
    """Prometheus's ``scrape_configs``: one job per service (its ``host:port``), and the job
    ``geth`` with every node's metrics endpoint, each labelled with its node's name."""
    jobs: list[dict[str, Any]] = [
        {"job_name": job, "static_configs": [{"targets": [target]}]}
        for job, target in targets.items()]
    if geth:
        jobs.append({"job_name": "geth", "metrics_path": GETH_METRICS_PATH,
                     "static_configs": [{"targets": [target], "labels": {"node": node}}
                                        for node, target in geth.items()]})
    return jobs


class SealingExporterService(BackgroundService):
    """``pilotchain network exporter`` reading the RPC node over its IPC socket."""

    name = "sealing-exporter"

    def __init__(self, settings: ChainSettings, env: Mapping[str, str],
                 state_dir: Path) -> None:
        super().__init__(state_dir, env, port=(LOOPBACK, settings.sealing_exporter_port,
                                               "SEALING_EXPORTER_PORT"))
        self.settings = settings
        self.url = f"http://{LOOPBACK}:{settings.sealing_exporter_port}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "runner.cli", "network", "exporter",
                "--ipc", str(self.settings.nodes_dir / RPC_NODE / "geth.ipc"),
                "--listen", f"{LOOPBACK}:{self.settings.sealing_exporter_port}"]

    def probe(self) -> bool:
        try:
            return requests.get(f"{self.url}/metrics", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def status(self) -> dict[str, Any]:
        return {"sealing_metrics_url": f"{self.url}/metrics"} if self.process.is_running() \
            else {}


class PrometheusService(BackgroundService):
    """Debian's prometheus with a configuration written from the stack's settings: each job
    of ``targets`` (its ``host:port``) and every geth node of the network it starts beside
    scraped every 15 s, the alerting rules loaded."""

    name = "prometheus"
    start_timeout = 120.0

    def __init__(self, settings: ChainSettings, targets: Mapping[str, str], home: Path,
                 state_dir: Path) -> None:
        super().__init__(state_dir, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                         port=(LOOPBACK, settings.prometheus_port, "PROMETHEUS_PORT"))
        self.targets = dict(targets)
        self.geth: dict[str, str] = {}
        self.home = home.resolve()
        self.url = f"http://{LOOPBACK}:{settings.prometheus_port}"

    def launch(self, net: LocalNetwork | None = None) -> bool:
        """Start unless running, scraping ``net``'s geth nodes too."""
        self.geth = net.metrics_targets() if net is not None else {}
        return super().launch(net)

    def argv(self) -> list[str]:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ServiceError("Prometheus is not installed; run ./scripts/up --monitoring, "
                               "which installs Debian's prometheus package.")
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "prometheus.yml"
        # JSON is YAML too: no YAML library at run time.
        config.write_text("# Written by ./scripts/up --monitoring; changes here are "
                          "overwritten.\n" + json.dumps({
                              "global": {"scrape_interval": SCRAPE_INTERVAL,
                                         "evaluation_interval": SCRAPE_INTERVAL},
                              "rule_files": [str(ALERTS)],
                              "scrape_configs": scrape_configs(self.targets, self.geth),
                          }, indent=2) + "\n")
        return [binary, f"--config.file={config}", f"--storage.tsdb.path={self.home / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}"]

    def process_env(self, net: LocalNetwork | None) -> dict[str, str]:
        return dict(self.env)

    def probe(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def status(self) -> dict[str, Any]:
        return {"prometheus_url": self.url} if self.process.is_running() else {}
