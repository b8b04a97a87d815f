"""The gsy-e plug-in on real Redis: gsy-e's interface, the stream format, buffering while
Redis is down, the overflow file, the import path gsy-e uses, and the constants it shares with
the bridge. (Its cost per call is measured in benchmarks/plugin_overhead.py; how it is installed
is tested in test_plugin_install.py.)"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from recordings import DATA

import pilotchain_gsy_plugin
from bridge.config import DEFAULT_STREAM, PLUGIN_SETTINGS
from bridge.events import EVENT_FIELD
from pilotchain.config import DEFAULT_REDIS_URL
from pilotchain.settings import PROJECT_ROOT
from pilotchain_gsy_plugin import (
    PluginSettings,
    SubstrateBlockchainInterface,
    TradePublisher,
    plugin_settings,
)
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


def many(count: int) -> list[dict[str, Any]]:
    """``count`` recorded events with fresh trade ids."""
    pool = recorded_events("default_2a_two_sided.jsonl")
    events = []
    for index in range(count):
        event = json.loads(json.dumps(pool[index % len(pool)]))
        event["trade"]["id"] = str(uuid.uuid4())
        events.append(event)
    return events


def test_trades_wait_in_order_while_redis_is_away_and_all_arrive_once(
        redis_server: RedisService, redis_url: str) -> None:
    publisher = TradePublisher(PluginSettings(redis_url=redis_url, stream=STREAM))
    bc = interface(publisher, "6b3c420b-e4f2-49eb-a762-4db010a3e4ec")
    events = many(6000)
    try:
        for event in events[:3000]:
            bc.track_trade_event(slot_of(event), FakeTrade(event["trade"]))
        assert publisher.flush(timeout=10)
        redis_server.stop()
        for event in events[3000:]:
            bc.track_trade_event(slot_of(event), FakeTrade(event["trade"]))
        assert publisher.pending() > 0
    finally:
        redis_server.start()
    try:
        assert publisher.flush(timeout=30), f"{publisher.pending()} trades not delivered"
    finally:
        publisher.close(timeout=1.0)
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
    # gives inside gsy-e's environment: the plug-in, and nothing of the bridge or the chain.
    code = ("import sys\n"
            "from gsy_dex.trade_store.market_interface import SubstrateBlockchainInterface as S\n"
            "bc = S('market', None)\n"
            "print(type(bc).__module__, bc.create_new_offer(1, 2, 'x') != '',\n"
            "      sorted(m for m in ('web3', 'eth_account', 'pilotchain', 'bridge')\n"
            "             if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "plugin"),
           "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pilotchain_gsy_plugin", "True", "[]"]


def test_the_plug_in_and_the_bridge_agree_on_the_stream() -> None:
    # Each side keeps its own copy (the plug-in runs where the bridge is not installed).
    assert pilotchain_gsy_plugin.EVENT_FIELD == EVENT_FIELD
    assert pilotchain_gsy_plugin.DEFAULT_STREAM == DEFAULT_STREAM
    assert pilotchain_gsy_plugin.DEFAULT_REDIS_URL == DEFAULT_REDIS_URL
    assert (PluginSettings().stream, PluginSettings().redis_url) == \
        (DEFAULT_STREAM, DEFAULT_REDIS_URL)


@pytest.mark.parametrize("env", [
    {},
    {"REDIS_URL": "redis://db:6380/1", "BRIDGE_STREAM": "s", "BRIDGE_PLUGIN_BUFFER": "7",
     "BRIDGE_PLUGIN_OVERFLOW_FILE": "/tmp/over.jsonl"},
])
def test_the_settings_reference_describes_what_the_plug_in_reads(env: dict[str, str]) -> None:
    documented = PLUGIN_SETTINGS.read(env)
    read = plugin_settings(env)
    assert documented["overflow_file"] == str(read.overflow_file)
    assert (documented["url_override"] or DEFAULT_REDIS_URL) == read.redis_url
    assert (documented["stream"], documented["buffer_limit"]) == (read.stream, read.buffer_limit)


# --- the chain legs gsy-e does not report -----------------------------------------------------
# gsy-e is not on the package registries, so these run against a stand-in with gsy-e's shape
# (models/market/two_sided.py at ab358e7: accept_bid behind a lock decorator that keeps
# __wrapped__, the leg made when no offer is given, the offer's trade reported by accept_offer);
# test_gsy_e_run.py checks the same against a real gsy-e where one is installed.


def locked(function: Any) -> Any:
    """gsy-e's lock_market_action: functools.wraps around the method."""
    @functools.wraps(function)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return function(self, *args, **kwargs)
    return wrapper


class StandInTrade(FakeTrade):
    def __init__(self, trade: dict[str, Any], offer: Any) -> None:
        super().__init__(trade)
        self.match_details = {"offer": offer, "bid": trade["bid"]}


class StandInTwoSidedMarket:
    """accept_offer reports its trade through the ledger hook; accept_bid books one but, for a
    chain leg (no offer), does not, exactly as gsy-e."""

    reports_legs_itself = False

    def __init__(self, bc: Any, time_slot: datetime, events: list[dict[str, Any]]) -> None:
        self.bc_interface = bc
        self.time_slot = time_slot
        self.trades: list[Any] = []
        self._events = iter(events)

    def _next(self, offer: Any) -> StandInTrade:
        trade = StandInTrade(next(self._events)["trade"], offer)
        self.trades.append(trade)
        return trade

    def accept_offer(self) -> StandInTrade:
        trade = self._next(offer="offer")
        self.bc_interface.track_trade_event(self.time_slot, trade)
        return trade

    @locked
    def accept_bid(self, bid: Any, energy: Any = None, seller: Any = None, buyer: Any = None,
                   trade_offer_info: Any = None, offer: Any = None) -> StandInTrade:
        trade = self._next(offer)
        if not offer and self.reports_legs_itself:
            self.bc_interface.track_trade_event(self.time_slot, trade)
        return trade


@pytest.fixture
def market_class() -> Any:
    """A fresh stand-in class per test, with its own accept_bid as gsy-e's TwoSidedMarket
    has (wrapping replaces the class's attribute)."""
    return type("TwoSidedMarket", (StandInTwoSidedMarket,),
                {"accept_bid": StandInTwoSidedMarket.__dict__["accept_bid"]})


def test_chain_legs_reach_the_hook_once_and_paired_bid_trades_never(
        market_class: Any, publisher: TradePublisher, redis_url: str) -> None:
    events = many(6)
    slot = slot_of(events[0])
    market = market_class(interface(publisher, "market-uuid"), slot, events)
    assert pilotchain_gsy_plugin.report_chain_legs(market_class) == ["TwoSidedMarket"]
    assert pilotchain_gsy_plugin.report_chain_legs(market_class) == []  # once per class
    market.accept_offer()                                         # reported by gsy-e
    market.accept_bid("bid", 1.0, offer="offer")                  # the match's bid trade
    market.accept_bid("bid", 1.0, "seller", None, None, None)     # a leg, offer positional
    market.accept_bid(bid="bid", offer=None)                      # a leg, by keyword
    market.accept_bid("bid")                                      # a leg, offer by default
    market.accept_bid("bid", 1.0, "seller", None, None, "offer")  # paired, positional
    assert publisher.flush(timeout=10)
    assert [e["trade"]["id"] for e in stream_events(redis_url)] == \
        [events[i]["trade"]["id"] for i in (0, 2, 3, 4)]
    assert all(e["market_id"] == "market-uuid" and e["time_slot"] == str(slot)
               for e in stream_events(redis_url))
    assert len(market.trades) == 6  # gsy-e's books are untouched


def test_a_subclass_s_own_accept_bid_and_a_gsy_e_that_reports_legs_itself_report_once(
        market_class: Any, publisher: TradePublisher, redis_url: str) -> None:
    class Settlement(market_class):  # type: ignore[misc, valid-type]
        @locked
        def accept_bid(self, *args: Any, **kwargs: Any) -> Any:
            return super().accept_bid(*args, **kwargs)

    class Fixed(market_class):  # type: ignore[misc, valid-type]
        reports_legs_itself = True  # a future gsy-e with the upstream fix (docs/bridge.md)

    wrapped = pilotchain_gsy_plugin.report_chain_legs(market_class)
    assert [name.rsplit(".", 1)[-1] for name in wrapped] == ["TwoSidedMarket", "Settlement"]
    events = many(2)
    bc = interface(publisher, "m")
    Settlement(bc, slot_of(events[0]), events[:1]).accept_bid("bid")
    Fixed(bc, slot_of(events[0]), events[1:]).accept_bid("bid")
    assert publisher.flush(timeout=10)
    assert [e["trade"]["id"] for e in stream_events(redis_url)] == \
        [e["trade"]["id"] for e in events]


def test_a_leg_the_hook_cannot_report_never_fails_gsy_e_s_trade(
        market_class: Any, caplog: pytest.LogCaptureFixture) -> None:
    class Failing(SubstrateBlockchainInterface):
        def track_trade_event(self, time_slot: Any, trade: Any) -> None:
            raise RuntimeError("ledger on fire")

    pilotchain_gsy_plugin.report_chain_legs(market_class)
    events = many(2)
    market = market_class(Failing.__new__(Failing), slot_of(events[0]), events[:1])
    with caplog.at_level(logging.ERROR, logger="pilotchain.gsy_plugin"):
        trade = market.accept_bid("bid")
    assert trade.id == events[0]["trade"]["id"] and market.trades == [trade]
    assert f"Could not report the chain leg {trade.id}" in caplog.text
    # A market on gsy-e's own NonBlockchainInterface (no --enable-bc) is left alone.
    other = market_class(object(), slot_of(events[1]), events[1:])
    assert other.accept_bid("bid").id == events[1]["trade"]["id"]
