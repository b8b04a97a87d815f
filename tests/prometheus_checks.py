"""Checks of a ``/metrics`` answer with Prometheus's own tools: promtool's parser and linter
(``promtool check metrics``, Debian's prometheus package, installed by ./scripts/test), and
the client library's parser for the values."""

from __future__ import annotations

import shutil
import subprocess

import requests
from prometheus_client.parser import text_string_to_metric_families

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool_problems(text: str) -> str:
    """What ``promtool check metrics`` says of ``text`` (empty when it parses and lints
    clean: counters end in _total, every family has HELP and TYPE, units in base names)."""
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, check=False)
    return "" if done.returncode == 0 else (done.stdout + done.stderr).strip()


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
