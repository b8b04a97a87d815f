"""The gsy-e plug-in on real Redis: gsy-e's interface, the stream format, speed, buffering
while Redis is down, the overflow file, and the import path gsy-e uses."""

from __future__ import annotations

import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from recordings import DATA

from bridge.events import EVENT_FIELD
from bridge.gsy_plugin import (
    PluginSettings,
    SubstrateBlockchainInterface,
    TradePublisher,
    plugin_settings,
)
from pilotchain.settings import PROJECT_ROOT
from runner.ports import free_port
from runner.redis import RedisService

STREAM = "plugin:trades"


class FakeTrade:
    """Stands in for gsy_framework's Trade: only ``serializable_dict`` is used."""

    def __init__(self, trade: dict[str, Any]) -> None:
        self.id = trade["id"]
        self._trade = trade

    def serializable_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._trade))


def recorded_events(name: str = "default_2a_one_sided.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def slot_of(event: dict[str, Any]) -> datetime:
    """The time slot object gsy-e passes (its str() is what the recordings hold)."""
    return datetime.fromisoformat(event["time_slot"]).astimezone(UTC)


def stream_events(redis_url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(fields[EVENT_FIELD.encode()]) for _, fields in client.xrange(STREAM)]
    finally:
        client.close()


def interface(publisher: TradePublisher, market_id: str, simulation_id: str | None = None
              ) -> SubstrateBlockchainInterface:
    """An interface on a test publisher (gsy-e's would use the process's shared one)."""
    bc = SubstrateBlockchainInterface(market_id, simulation_id)
    bc._publisher = publisher
    return bc


@pytest.fixture
def publisher(redis_url: str) -> Any:
    pub = TradePublisher(PluginSettings(redis_url=redis_url, stream=STREAM))
    yield pub
    pub.close(timeout=1.0)


def test_the_interface_answers_like_gsy_e_s_non_blockchain_interface() -> None:
    # gsy_e/gsy_e_core/blockchain_interface.py: NonBlockchainInterface, call for call.
    bc = SubstrateBlockchainInterface("market-uuid", "simulation-uuid")
    assert (bc.market_id, bc.simulation_id) == ("market-uuid", "simulation-uuid")
    assert SubstrateBlockchainInterface("market-uuid").simulation_id is None
    offer_ids = {bc.create_new_offer(1.0, 30.0, "seller") for _ in range(100)}
    assert len(offer_ids) == 100
    assert all(uuid.UUID(offer_id).version == 4 for offer_id in offer_ids)
    assert bc.cancel_offer(object()) is None
    assert bc.change_offer(object(), object(), object()) is None
    residual = object()
    trade_id, returned = bc.handle_blockchain_trade_event(object(), "buyer", object(), residual)
    assert uuid.UUID(trade_id).version == 4 and returned is residual
    assert bc.bc_listener() is None


def test_each_trade_becomes_one_stream_entry_as_recorded(publisher: TradePublisher,
                                                         redis_url: str) -> None:
    events = recorded_events()
    markets: dict[str, SubstrateBlockchainInterface] = {}
    for event in events:
        bc = markets.setdefault(event["market_id"], interface(publisher, event["market_id"]))
        assert bc.track_trade_event(slot_of(event), FakeTrade(event["trade"])) is None
    assert publisher.flush(timeout=10)
    assert stream_events(redis_url) == events  # same order, same JSON


def paced_calls(bc: SubstrateBlockchainInterface, events: list[dict[str, Any]],
                rate: float) -> tuple[list[float], list[float]]:
    """gsy-e's market stand-in: ``track_trade_event`` at ``rate`` calls per second; returns
    each call's wall time and the calling thread's CPU time, in seconds."""
    wall, cpu = [], []
    started = time.perf_counter()
    for index, event in enumerate(events):
        while time.perf_counter() < started + index / rate:
            pass  # spin, as a busy market would: a sleep's wake-up jitter blurs 1 kHz pacing
        trade = FakeTrade(event["trade"])
        before, before_cpu = time.perf_counter(), time.thread_time()
        bc.track_trade_event(slot_of(event), trade)
        wall.append(time.perf_counter() - before)
        cpu.append(time.thread_time() - before_cpu)
    return wall, cpu


def many(count: int) -> list[dict[str, Any]]:
    """``count`` recorded events with fresh trade ids."""
    pool = recorded_events("default_2a_two_sided.jsonl")
    events = []
    for index in range(count):
        event = json.loads(json.dumps(pool[index % len(pool)]))
        event["trade"]["id"] = str(uuid.uuid4())
        events.append(event)
    return events


def test_at_1000_trades_per_second_a_call_costs_under_a_millisecond_and_redis_may_go_away(
        redis_server: RedisService, redis_url: str) -> None:
    publisher = TradePublisher(PluginSettings(redis_url=redis_url, stream=STREAM))
    bc = interface(publisher, "6b3c420b-e4f2-49eb-a762-4db010a3e4ec")
    events = many(6000)
    # The test's own 6000 events would make every full garbage collection (triggered by
    # any allocation, the plug-in's included) walk them: keep them out of its way.
    gc.freeze()
    try:
        up = paced_calls(bc, events[:3000], rate=1000)
        assert publisher.flush(timeout=10)
        redis_server.stop()
        down = paced_calls(bc, events[3000:], rate=1000)
        assert publisher.pending() > 0
    finally:
        gc.unfreeze()
        redis_server.start()
    try:
        assert publisher.flush(timeout=30), f"{publisher.pending()} trades not delivered"
    finally:
        publisher.close(timeout=1.0)
    for label, (wall, cpu) in (("Redis up", up), ("Redis down", down)):
        ordered = sorted(wall)
        print(f"{label}: wall mean {statistics.mean(wall) * 1e6:.0f} us, median "
              f"{statistics.median(wall) * 1e6:.0f} us, p99 "
              f"{ordered[int(0.99 * len(ordered))] * 1e6:.0f} us, max {ordered[-1] * 1e6:.0f} "
              f"us; CPU mean {statistics.mean(cpu) * 1e6:.0f} us per call")
        # Means, not tails: on a shared 2-core machine the scheduler alone puts
        # milliseconds into the tail of any loop (see the report for p99 and max).
        assert statistics.mean(wall) < 0.001, label
        assert statistics.median(wall) < 0.001, label
        assert statistics.mean(cpu) < 0.001, label
    delivered = [event["trade"]["id"] for event in stream_events(redis_url)]
    assert delivered == [event["trade"]["id"] for event in events]  # all, once, in order


def test_a_failing_trade_is_logged_never_raised_into_gsy_e(
        publisher: TradePublisher, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        id = "broken"

        def serializable_dict(self) -> dict[str, Any]:
            raise ValueError("no dict today")

    bc = interface(publisher, "market")
    with caplog.at_level(logging.ERROR, logger="pilotchain.gsy_plugin"):
        assert bc.track_trade_event(datetime.now(UTC), Broken()) is None
    assert "Could not queue trade broken of market market" in caplog.text
    odd = FakeTrade({"id": "x"})
    odd._trade = {"id": "x", "when": datetime(2026, 6, 21, tzinfo=UTC)}  # type: ignore[dict-item]
    odd.serializable_dict = lambda: odd._trade  # type: ignore[method-assign]
    bc.track_trade_event(None, odd)
    assert publisher.flush(timeout=10)
    assert stream_events(redis_url)[-1]["trade"]["when"] == "2026-06-21 00:00:00+00:00"


def test_a_full_buffer_overflows_to_a_replayable_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    overflow = tmp_path / "unpublished.jsonl"
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    publisher = TradePublisher(PluginSettings(redis_url=dead_redis, stream=STREAM,
                                              buffer_limit=5, overflow_file=overflow))
    events = recorded_events()[:20]
    with caplog.at_level(logging.WARNING, logger="pilotchain.gsy_plugin"):
        for event in events:
            bc = interface(publisher, event["market_id"])
            bc.track_trade_event(slot_of(event), FakeTrade(event["trade"]))
        assert publisher.pending() == 5
        publisher.close(timeout=0.2)  # at exit: what Redis did not take goes to the file
    saved = [json.loads(line) for line in overflow.read_text().splitlines()]
    # The 15 that did not fit, then the 5 the buffer held at exit; each in recording format.
    assert [e["trade"]["id"] for e in saved] == \
        [e["trade"]["id"] for e in events[5:] + events[:5]]
    assert saved[0] == events[5]
    assert f"./scripts/replay {overflow}" in caplog.text
    assert "is unreachable" in caplog.text


def test_settings_come_from_the_environment(caplog: pytest.LogCaptureFixture) -> None:
    assert plugin_settings({}) == PluginSettings()
    settings = plugin_settings({"REDIS_URL": "redis://r:1/2", "BRIDGE_STREAM": "s",
                                "BRIDGE_PLUGIN_BUFFER": "10",
                                "BRIDGE_PLUGIN_OVERFLOW_FILE": "/tmp/o.jsonl"})
    assert settings == PluginSettings("redis://r:1/2", "s", 10, Path("/tmp/o.jsonl"))
    with caplog.at_level(logging.WARNING, logger="pilotchain.gsy_plugin"):
        assert plugin_settings({"BRIDGE_PLUGIN_BUFFER": "lots"}).buffer_limit == 200_000
    assert "BRIDGE_PLUGIN_BUFFER must be a whole number, not 'lots'" in caplog.text


def test_gsy_e_finds_the_plug_in_where_it_looks_without_web3(tmp_path: Path) -> None:
    # What `from gsy_dex.trade_store.market_interface import SubstrateBlockchainInterface`
    # gives inside gsy-e's environment: the plug-in, and nothing of the bridge's chain side.
    code = ("import sys\n"
            "from gsy_dex.trade_store.market_interface import SubstrateBlockchainInterface as S\n"
            "bc = S('market', None)\n"
            "print(type(bc).__module__, bc.create_new_offer(1, 2, 'x') != '',\n"
            "      sorted(m for m in ('web3', 'eth_account', 'pilotchain') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["bridge.gsy_plugin", "True", "[]"]
