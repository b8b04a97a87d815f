"""A real gsy-e run with the plug-in: every trade gsy-e books reaches the hook, once.

gsy-e is not on the package registries, so CI cannot install it: these tests run where an
environment with gsy-e exists (``GSY_E_PYTHON`` names its interpreter; or this interpreter
imports gsy_e) and are skipped elsewhere. Each runs a few simulated hours of one setup in
that environment through ``tests/gsy_e_driver.py`` (the plug-in from this checkout, Redis
of the test), which records every trade gsy-e appends to a market's ``trades`` list; then:

* per market, the trades the hook published are exactly the trades gsy-e booked, each once
  (two-sided runs: the chain legs among them);
* the published trades, settled through the real bridge on the real chain, reconcile with
  gsy-e's own export of the run (``pilotchain reconcile``'s comparison): nothing missing,
  extra or different.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from bridge_fixtures import (
    STREAM,
    BridgeThread,
    Deployed,
    bridge_settings,
    wait_for_work,
    work_progress,
)

from bridge.events import EVENT_FIELD
from pilotchain.chain import connect
from pilotchain.gsy_export import read_export
from pilotchain.reconcile import chain_trades, reconcile
from pilotchain.settings import PROJECT_ROOT

DRIVER = PROJECT_ROOT / "tests" / "gsy_e_driver.py"
THREE_LEVELS = PROJECT_ROOT / "tests" / "data" / "three_levels.json"
COMMON = ["-s", "15m", "-t", "15s", "-d", "6h", "--seed", "1", "--start-date", "2026-06-21",
          "--enable-bc"]
# A setup, and whether its first hours have chain legs (pay-as-clear's few come later;
# one-sided markets have none).
SETUPS: dict[str, tuple[list[str], bool | None]] = {
    "pay_as_bid": (["--setup", "default_2a", "-m", "2"], True),
    "pay_as_clear": (["--setup", "two_sided_pay_as_clear.default_2a"], None),
    "settlement": (["--setup", "settlement_market.default_2a_settlement"], True),
    "three_levels": (["--setup", "json_file", "-m", "2"], True),
    "one_sided": (["--setup", "default_2a", "-m", "1"], False),
}


def run_gsy_e(python: str, setup: list[str], redis_url: str, tmp_path: Path
              ) -> dict[str, Any]:
    env = {**os.environ, "REDIS_URL": redis_url, "BRIDGE_STREAM": STREAM,
           "KAFKA_URL": "127.0.0.1:1",  # gsy-e tries Kafka; keep it on loopback
           "D3A_SETUP_PATH": str(THREE_LEVELS),  # the json_file setup reads it
           "BRIDGE_PLUGIN_OVERFLOW_FILE": str(tmp_path / "overflow.jsonl")}
    booked = tmp_path / "booked.json"
    result = subprocess.run([python, str(DRIVER), str(booked), *setup, *COMMON,
                             "--export-path", str(tmp_path / "export")],
                            env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "overflow.jsonl").exists()
    return dict(json.loads(booked.read_text()))


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_every_trade_gsy_e_books_reaches_the_chain_once_and_equals_its_export(
        name: str, gsy_e_python: str, deployed: Deployed, redis_url: str,
        tmp_path: Path) -> None:
    setup, has_legs = SETUPS[name]
    books = run_gsy_e(gsy_e_python, setup, redis_url, tmp_path)
    client = redis.Redis.from_url(redis_url)
    try:
        events = [json.loads(fields[EVENT_FIELD.encode()])
                  for _, fields in client.xrange(STREAM)]
    finally:
        client.close()
    booked = Counter((t["market_id"], t["trade_id"]) for t in books["trades"])
    hooked = Counter((e["market_id"], e["trade"]["id"]) for e in events)
    assert hooked == booked, (f"{sum((booked - hooked).values())} booked trades never reached "
                              f"the hook, {sum((hooked - booked).values())} reached it unbooked")
    assert max(hooked.values()) == 1
    legs = sum(1 for t in books["trades"] if not t["offer"])
    assert legs == sum(1 for e in events if e["trade"].get("offer") is None)
    if has_legs is not None:
        assert (legs > 0) == has_legs

    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == len(events),
                      progress=work_progress(metrics),
                      what=f"the bridge to settle the run's {len(events)} trades")
    url = deployed.net.rpc_url
    result = reconcile(read_export(tmp_path / "export"),
                       chain_trades(connect(url), url, deployed.deployment))
    assert result.ok, result.differences[:5]
    assert result.total("matched") == len(events)
